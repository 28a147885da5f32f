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

# every statement in the server log, to tell named from unnamed ones
my $t = Corelog::Test->new(pg_conf => 'log_min_duration_statement = 0');

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

# and with unnamed statements (corelog_prepared_statements off)
push @cases, ['unnamed statements',
              "host=127.0.0.1 port=$port dbname=corelog user=postgres", 1];

for my $case (@cases) {
    my ($name, $conninfo, $unnamed) = @$case;
    subtest $name => sub {
        $t->write_shipped_conf(conninfo => $conninfo);
        if ($unnamed) {
            my $conf = $t->nginx_conf;
            $conf =~ s/(corelog_postgres [^\n]*\n)/$1    corelog_prepared_statements off;\n/
                or die "no corelog_postgres line";
            open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
            print $fh $conf;
            close $fh;
        }
        my $log_from = length $t->pg_log;
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

        # named statements are prepared once per connection; unnamed ones
        # are parsed with every execution
        my $log = substr $t->pg_log, $log_from;
        if ($unnamed) {
            like($log, qr/execute <unnamed>: WITH input AS/,
                 'unnamed statements');
            unlike($log, qr/execute channel_log_insert/, 'no named one');
        } else {
            like($log, qr/execute channel_log_insert/,
                 'the named prepared statement');
        }

        $t->stop;
    };
}

$t->done;
done_testing;
