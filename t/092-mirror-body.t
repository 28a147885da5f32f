#!/usr/bin/perl

# The module frees a body once it has parsed it, but only a body it read
# itself: an API location that is mirrored (mirror_request_body on, the
# default) shares its body with the mirror's subrequest, which must still
# send all of it.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF');
    log_format body escape=none '$request_length $request_body';

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
            mirror /_mirror;
            client_body_buffer_size 256k;
        }

        location = /_mirror {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/sink;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }
    }

    # the mirror's backend: reads the body (to proxy it) and logs it
    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /sink {
            client_body_buffer_size 256k;
            client_body_in_single_buffer on;
            access_log %%DIR%%/mirror.log body;
            proxy_pass http://127.0.0.1:%%PORT2%%/empty;
        }

        location = /empty {
            access_log off;
            return 204;
        }
    }
EOF
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

my $body = encode_json({ channel_id => $ch, label => 'mirrored',
                         body => 'b' x 60000, reference => 'r' x 200 });

my $r = $t->http(POST => '/api/v1/log/create',
                 headers => { Authorization => "Bearer $tok",
                              'Content-Type' => 'application/json' },
                 body => $body);
is($r->{status}, 202, "the write: 202") or diag substr($r->{body}, 0, 300);

my $log = '';
for (1 .. 100) {
    $log = Corelog::Test::_slurp($t->dir . '/mirror.log') // '';
    last if length $log;
    sleep 0.05;
}

my ($len, $logged) = $log =~ /^(\d+) (.*)$/m;
ok(defined $logged, 'the mirror logged its request') or diag $log;
is(length($logged // ''), length $body, 'the mirror got the whole body');
ok(($logged // "") eq $body, "byte for byte");

$t->done;
done_testing;
