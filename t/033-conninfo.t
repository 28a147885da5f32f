#!/usr/bin/perl

# Connection strings: a unix socket, a multi-host list whose first host
# refuses (libpq moves to the next host and a new socket), and a URI.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

# a port with nothing listening
my $closed = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                   LocalPort => 0)->sockport;

my $port = $t->pg_port;
my $dir = $t->pg_socket_dir;

my @cases = (
    ['a unix socket', "host=$dir port=$port dbname=corelog user=postgres"],
    ['two hosts, the first refusing',
        "host=127.0.0.1,127.0.0.1 port=$closed,$port dbname=corelog "
        . "user=postgres connect_timeout=2"],
    ['a URI', "postgresql://postgres\@127.0.0.1:$port/corelog"],
    ['a URI with two hosts',
        "postgresql://postgres\@127.0.0.1:$closed,127.0.0.1:$port/corelog"],
);

for my $case (@cases) {
    my ($name, $conninfo) = @$case;
    subtest $name => sub {
        $t->write_shipped_conf(conninfo => $conninfo);
        $t->run;

        my $ok = 0;
        for my $i (1 .. 5) {
            my $r = $t->http(POST => '/api/v1/log/create',
                headers => { Authorization => "Bearer $tok",
                             'Content-Type' => 'application/json' },
                body => encode_json({ channel_id => $ch,
                                      label => "$name $i" }));
            $ok++ if $r->{status} == 202;
        }
        is($ok, 5, 'five writes: 202');

        my ($n) = $t->dbh->selectrow_array(
            'SELECT count(*) FROM corelog.channel_logs WHERE label LIKE $1',
            undef, "$name %");
        is($n, 5, 'five rows');

        $t->stop;
    };
}

$t->done;
done_testing;
