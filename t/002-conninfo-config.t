#!/usr/bin/perl

# corelog_postgres is input too: every legal conninfo (long host names,
# many hosts, IPv6 literals, unix-socket paths, URIs) passes `nginx -t` or
# is refused with a clear [emerg]; none crashes the master.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;

my $t = Corelog::Test->new(pg => 0);

my $route = Corelog::Test::core_log_server();

sub nginx_t {
    my ($conninfo) = @_;
    $t->write_conf(qq{corelog_postgres "$conninfo";\n} . $route,
                   no_postgres => 1);
    return $t->nginx_test_conf;
}

# a DNS name of $len characters, labels of at most 51, ending in .invalid
sub long_name {
    my ($len) = @_;
    my $name = substr join('.', ('a' x 50) x 10), 0, $len - 8;
    $name =~ s/\.$/a/;
    return "$name.invalid";
}

is(length long_name(250), 250, 'the long name helper');

# [name, conninfo]: nginx -t accepts these
my @good = (
    ['an IPv6 literal', 'host=::1 port=5432 dbname=corelog'],
    ['an IPv6 literal in a URI', 'postgresql://[::1]:5432/corelog'],
    ['a unix-socket directory', 'host=/var/run/postgresql dbname=corelog'],
    ['an abstract unix socket', 'host=@corelog dbname=corelog'],
    ['a socket directory and a name',
        'host=/var/run/postgresql,localhost port=5432,5433 dbname=corelog'],
    ['64 hosts',
        'host=' . join(',', ('127.0.0.1') x 64) . ' dbname=corelog'],
    ['a URI with three hosts',
        'postgresql://127.0.0.1:1,localhost:2,[::1]:3/corelog'],
    ['hostaddr given', 'host=db.example hostaddr=127.0.0.1 dbname=corelog'],
    ['an empty entry in a host list', 'host=127.0.0.1, dbname=corelog'],
);

for my $case (@good) {
    my ($name, $conninfo) = @$case;
    subtest $name => sub {
        my ($rc, $out) = nginx_t($conninfo);
        is($rc, 0, 'nginx -t: exit 0') or diag $out;
    };
}

# [name, conninfo, expected message]: nginx -t refuses these, clearly
my @bad = (
    ['a 129-character host name', 'host=' . long_name(129) . ' dbname=x',
        qr/corelog: host "(?:a+\.)+invalid" in conninfo not found/],
    ['a 200-character host name', 'host=' . long_name(200) . ' dbname=x',
        qr/corelog: host "(?:a+\.)+invalid" in conninfo not found/],
    ['a 250-character host name', 'host=' . long_name(250) . ' dbname=x',
        qr/corelog: host "(?:a+\.)+invalid" in conninfo not found/],
    ['a 250-character name after others',
        'host=127.0.0.1,' . long_name(250) . ',::1 dbname=x',
        qr/corelog: host "(?:a+\.)+invalid" in conninfo not found/],
    ['a 300-character host name', 'host=' . long_name(300) . ' dbname=x',
        qr/corelog: host name in conninfo is longer than 253 characters/],
    ['a 2000-character host name', 'host=' . ('b' x 2000) . ' dbname=x',
        qr/corelog: host name in conninfo is longer than 253 characters/],
    ['a port list of another length than the host list',
        'host=127.0.0.1,::1 port=5432,5433,5434 dbname=x',
        qr/corelog: conninfo has 2 hosts but 3 ports/],
    ['a unix-socket path too long for sun_path',
        'host=/' . ('d' x 120) . ' dbname=x',
        qr/corelog: unix-socket directory "\/d+" in conninfo is too long/],
);

for my $case (@bad) {
    my ($name, $conninfo, $re) = @$case;
    subtest $name => sub {
        my ($rc, $out) = nginx_t($conninfo);
        is($rc, 1, 'nginx -t: exit 1, no crash') or diag $out;
        like($out, qr/\[emerg\]/, 'an [emerg] line');
        like($out, $re, 'says what is wrong') or diag $out;
        unlike($out, qr/AddressSanitizer|runtime error/, 'no sanitizer report');
    };
}

$t->done;
done_testing;
