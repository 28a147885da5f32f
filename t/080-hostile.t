#!/usr/bin/perl

# Hostile input: mutated and random bodies, deep nesting, many keys, bad
# framing, pipelined requests.  Every answer is a clear JSON error (or a
# success for a body that is still valid); nothing crashes, nothing is
# stored by an error, nothing is logged as an alert.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

srand(20261125);

sub post {
    my ($raw_body) = @_;
    return $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => $raw_body);
}

sub count {
    return scalar $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs');
}

my $valid = encode_json({ channel_id => $ch, label => 'hostile',
                          reference => 'r', body => 'b', type => 'action',
                          alert => JSON::PP::false, tags => 'a,b',
                          custom_references => { k => 'v', n => 1 } });

# mutations of a valid body: each answer is 202 (still valid), 400 or 404

my (%seen, $bad, $accepted);
for my $i (1 .. 300) {
    my $b = $valid;
    my $kind = $i % 4;
    if ($kind == 0) {
        substr($b, int rand length $b, 1) = chr int rand 256;
    } elsif ($kind == 1) {
        $b = substr($b, 0, int rand length $b);
    } elsif ($kind == 2) {
        substr($b, int rand length $b, 0) =
            join '', map { chr int rand 256 } 1 .. 1 + int rand 8;
    } else {
        my $p = int rand length $b;
        substr($b, $p, 0) = substr($b, 0, $p);
    }

    my $before = count();
    my $r = post($b);
    $seen{$r->{status}}++;

    my $ok = ($r->{status} == 202 && count() == $before + 1)
          || (($r->{status} == 400 || $r->{status} == 404)
              && count() == $before
              && defined $r->{json}{name} && defined $r->{json}{message});
    $accepted++ if $r->{status} == 202;
    if (!$ok) {
        $bad++;
        diag "mutation $i: status $r->{status}: $r->{body}" if $bad < 5;
    }
}
ok(!$bad, '300 mutated bodies: 202, or a JSON 400/404 that stores nothing')
    or diag explain \%seen;
ok($seen{400}, 'most mutations are refused with 400');

# random bytes

subtest 'random binary bodies: 400' => sub {
    my $before = count();
    my $fails = 0;
    for (1 .. 50) {
        my $b = join '', map { chr int rand 256 } 1 .. 1 + int rand 3000;
        my $r = post($b);
        $fails++ unless $r->{status} == 400 && $r->{json}{name};
    }
    is($fails, 0, 'every one a JSON 400');
    is(count(), $before, 'nothing stored');
};

# shapes that cost a parser

my @shapes = (
    ['deeply nested custom_references',
        '{"channel_id":"' . $ch . '","label":"x","custom_references":'
        . ('[' x 3000) . (']' x 3000) . '}'],
    ['deeply nested objects',
        '{"a":' . ('{"a":' x 3000) . '1' . ('}' x 3000) . '}'],
    ['10000 keys', '{' . join(',', map { qq("k$_":$_) } 1 .. 10000) . '}'],
    ['a huge number', '{"channel_id":"' . $ch . '","label":"x","alert":'
        . ('9' x 400) . '}'],
    ['a huge exponent', '{"label":1e999999}'],
    ['20000 tags', '{"channel_id":"' . $ch . '","label":"x","tags":"'
        . join(',', 1 .. 20000) . '"}'],
    ['an escaped-unicode flood', '{"channel_id":"' . $ch . '","label":"'
        . ('\\u00e9' x 300) . '"}'],
);

for my $case (@shapes) {
    my ($name, $b) = @$case;
    subtest $name => sub {
        my $before = count();
        my $r = post($b);
        is($r->{status}, 400, 'status 400');
        ok($r->{json}{name}, 'JSON error');
        is(count(), $before, 'nothing stored');
    };
}

# framing

my @framing = (
    ['a negative Content-Length', "POST /api/v1/log/create HTTP/1.1\r\n"
        . "Host: x\r\nContent-Length: -5\r\n\r\n"],
    ['two Content-Lengths', "POST /api/v1/log/create HTTP/1.1\r\n"
        . "Host: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"],
    ['a bad chunk size', "POST /api/v1/log/create HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer $tok\r\nContent-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"],
    ['a NUL in the URI', "POST /api/v1/log/\0create HTTP/1.1\r\nHost: x\r\n\r\n"],
    ['a header line without a colon', "POST /api/v1/log/create HTTP/1.1\r\n"
        . "Host: x\r\nbroken header\r\n\r\n"],
);

for my $case (@framing) {
    my ($name, $raw) = @$case;
    subtest $name => sub {
        my $r = $t->http(POST => '/api/v1/log/create', raw => $raw);
        is($r->{status}, 400, 'status 400');
        is($r->{json}{name}, 'BadRequest', 'a JSON BadRequest');
    };
}

subtest 'a header over the buffers: 400' => sub {
    my $r = $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => 'Bearer ' . ('a' x 20000),
                     'Content-Type' => 'application/json' }, body => '{}');
    is($r->{status}, 400, 'status 400');
    is($r->{json}{name}, 'BadRequest', 'a JSON BadRequest');
};

subtest 'pipelined requests on one connection' => sub {
    my $before = count();
    my $one = sub {
        my ($label, $close) = @_;
        my $b = encode_json({ channel_id => $ch, label => $label });
        return "POST /api/v1/log/create HTTP/1.1\r\nHost: x\r\n"
             . "Authorization: Bearer $tok\r\n"
             . "Content-Type: application/json\r\n"
             . 'Content-Length: ' . length($b) . "\r\n"
             . ($close ? "Connection: close\r\n" : '') . "\r\n$b";
    };
    my $raw = $one->('p1') . $one->('p2') . $one->('p3', 1);

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Timeout => 10)
        or die "connect: $!";
    print $s $raw;
    local $/;
    my $all = <$s>;
    close $s;

    my @statuses = $all =~ m{HTTP/1\.1 (\d+) }g;
    is_deeply(\@statuses, [202, 202, 202], 'three answers, in order');
    is(count(), $before + 3, 'three rows');
};

subtest 'still serving' => sub {
    is(post($valid)->{status}, 202, 'a valid body: 202');
};

$t->done;
done_testing;
