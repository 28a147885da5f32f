#!/usr/bin/perl

# Text goes to PostgreSQL as UTF-8 on every connection (client_encoding
# UTF8, whatever the database's default), a database of another encoding
# gets no write (503, and the error log says why), and nginx -t refuses a
# conninfo that asks for another client_encoding.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use DBI;
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

# the database's own default client encoding is LATIN1: the module's
# connections must not take it
$t->dbh->do(q{ALTER DATABASE corelog SET client_encoding = 'LATIN1'});

# a second database, LATIN1 itself, with the schema
{
    my $dbh = DBI->connect($t->_dsn('postgres'), 'postgres', '',
                           { AutoCommit => 1, RaiseError => 1,
                             PrintError => 0 });
    $dbh->do(q{CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C'
               LC_CTYPE 'C' TEMPLATE template0});
    $dbh->disconnect;
}

$t->migrate('latin');

$t->write_shipped_conf(workers => 1);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc, 'payments');

my $text = "caf\x{e9} \x{2615} \x{1F600}";

subtest 'text is stored as sent, though the database defaults to LATIN1' => sub {
    my $r = $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => JSON::PP->new->utf8->encode(
            { channel_id => $ch, label => $text, body => 'x' }));
    is($r->{status}, 202, 'status 202') or diag $r->{body};

    my $dbh = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                           { AutoCommit => 1, RaiseError => 1,
                             PrintError => 0, pg_enable_utf8 => 1 });
    $dbh->do(q{SET client_encoding = 'UTF8'});
    my ($label, $chars) = $dbh->selectrow_array(
        'SELECT label, char_length(label) FROM corelog.channel_logs');
    is($label, $text, 'the label as sent');
    is($chars, 8, 'eight characters');
};

# the same module pointed at the LATIN1 database: no connection is kept
(my $latin = $t->pg_conninfo) =~ s/dbname=\S+/dbname=latin/;
$t->stop;
$t->write_shipped_conf(workers => 1, conninfo => $latin);
$t->run;

subtest 'a LATIN1 database: 503, and the error log says why' => sub {
    my $r = $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => 'x' }));
    is($r->{status}, 503, 'status 503');
    like($t->error_log,
         qr/\[error\].*corelog: the database's encoding is LATIN1, not UTF8: no write goes to it/,
         'the error log names the encoding');
};

$t->stop;

subtest 'nginx -t refuses another client_encoding' => sub {
    $t->write_shipped_conf(conninfo => $t->pg_conninfo
                                       . ' client_encoding=LATIN1');
    my ($rc, $out) = $t->nginx_test_conf;
    is($rc, 1, 'nginx -t: exit 1');
    like($out, qr/\[emerg\].*corelog: client_encoding "LATIN1" in conninfo: the module sends UTF8/,
         'says why');

    for my $name (qw(utf8 UTF-8 Unicode)) {
        $t->write_shipped_conf(conninfo => $t->pg_conninfo
                                           . " client_encoding=$name");
        ($rc, $out) = $t->nginx_test_conf;
        is($rc, 0, "client_encoding=$name is fine") or diag $out;
    }

    $t->write_shipped_conf(conninfo => $t->pg_conninfo
                                       . ' client_encoding=utf8mb4');
    ($rc, $out) = $t->nginx_test_conf;
    is($rc, 1, 'client_encoding=utf8mb4 is refused');
};

$t->done;
done_testing;
