package Corelog::Bodies;

# The largest bodies each route accepts (every field at its limit, written
# plainly: 4-byte UTF-8 characters where a limit counts characters, no JSON
# escapes, no white space) and bodies padded with fields the routes
# ignore.  Used by the tests (t/090-bounded-cost.t) and by `make bench`.
#
#   my $json = Corelog::Bodies::channel_max($channel_id);
#   my $json = Corelog::Bodies::pad($json, $bytes);   # unknown fields

use strict;
use warnings;

use JSON::PP ();

my $JSON = JSON::PP->new->utf8->canonical;

# $n characters of 4 bytes each (U+1F600 and up), varied by $seed
sub wide {
    my ($n, $seed) = @_;
    $seed //= 0;
    return join '', map { chr(0x1F600 + ($_ + $seed) % 64) } 1 .. $n;
}

# POST /api/v1/log/create: reference and label of 255 characters, a body
# of 65536 bytes, 256 tags (32 distinct ones of 64 characters, each eight
# times), 32 custom references (names of 64 characters, values of 255).
sub channel_max {
    my ($channel_id) = @_;

    my @tags = map { wide(64, $_) } 0 .. 31;
    my %refs = map { wide(64, 100 + $_) => wide(255, $_) } 0 .. 31;

    return $JSON->encode({
        channel_id => $channel_id,
        reference => wide(255, 1),
        label => wide(255, 2),
        body => wide(16384, 3),
        type => 'information',
        alert => JSON::PP::true,
        tags => [ map { @tags } 1 .. 8 ],
        custom_references => \%refs,
    });
}

# POST /core-log/{id}
sub core_log_max {
    my (%ids) = @_;
    return $JSON->encode({
        status => 599, method => 'OPTIONS', elapsedTime => 86399999.999,
        trafficUserId => wide(255, 4),
        corePathnameId => $ids{core_pathname_id},
        requestId => $ids{request_id}, responseId => $ids{response_id},
    });
}

# POST /v1/logtanks
sub logtank_max {
    my (%ids) = @_;
    return $JSON->encode({ logtank => {
        resource_type => 'T' x 64, resource_id => wide(255, $ids{seed} // 5),
        log_group_id => $ids{log_group_id},
        log_stream_id => $ids{log_stream_id} } });
}

# $json (an object) with fields the routes ignore appended ("pad0", ...:
# strings of at most 60000 bytes), exactly $bytes bytes in all
sub pad {
    my ($json, $bytes) = @_;
    my $i = 0;
    while (length($json) < $bytes) {
        # ,"padN":"" adds 9 + length(N) bytes around the string
        my $room = $bytes - length($json) - 9 - length($i);
        die "pad: no room for a field\n" if $room < 0;
        $room = 60000 if $room > 60000;
        substr($json, -1, 1) = ",\"pad$i\":\"" . ('p' x $room) . '"}';
        $i++;
    }
    return $json;
}

1;
