#!/usr/bin/perl

# scripts/migrate.sh upgrades a database made by migration 001 alone in
# place, keeping its rows, to the schema a fresh database gets, and can be
# run again and again; the module then serves all three APIs from the
# upgraded database.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

# the migrations in sql/, by number
my @versions = sort { $a <=> $b }
               map { m{/(\d{3})_\w+\.sql$} ? $1 + 0 : () }
               glob "$FindBin::Bin/../sql/*.sql";

my $t = Corelog::Test->new;

$t->dbh->do('CREATE DATABASE upgrade');
$t->migrate('upgrade', 1);

my $db = DBI->connect($t->_dsn('upgrade'), 'postgres', '',
                      { AutoCommit => 1, RaiseError => 1 });

# version 1 data: an account, a token, a source with a core log

my ($acc) = $db->selectrow_array(
    q{INSERT INTO corelog.accounts (name) VALUES ('old') RETURNING id});
my ($tok) = $db->selectrow_array(
    'SELECT corelog.create_token(?)', undef, $acc);
my ($ts) = $db->selectrow_array(q{
    INSERT INTO corelog.traffic_sources (account_id, name)
    VALUES (?, 'src') RETURNING id}, undef, $acc);
my ($cp) = $db->selectrow_array(q{
    INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
    VALUES (?, '/p') RETURNING id}, undef, $ts);
my @rr = map { scalar $db->selectrow_array(qq{
    INSERT INTO corelog.$_ (traffic_source_id) VALUES (?) RETURNING id},
    undef, $ts) } qw(requests responses);
$db->do(q{INSERT INTO corelog.core_log_claims VALUES (?, ?, ?)}, undef,
        @rr, '01a00000-0000-7000-8000-000000000001');
$db->do(q{INSERT INTO corelog.core_logs VALUES (?, ?, ?, ?, ?, 200, 'GET',
          'info', 1.5, NULL, now())}, undef,
        '01a00000-0000-7000-8000-000000000001', $ts, $cp, @rr);

sub snapshot {
    return $db->selectrow_arrayref(q{
        SELECT (SELECT count(*) FROM corelog.accounts),
               (SELECT count(*) FROM corelog.tokens),
               (SELECT count(*) FROM corelog.core_logs),
               (SELECT count(*) FROM corelog.core_log_claims)});
}

is_deeply(snapshot(), [1, 1, 1, 1], 'version 1 data');

for my $pass (1, 2) {
    $t->migrate('upgrade');
    is_deeply(snapshot(), [1, 1, 1, 1], "pass $pass: every row kept");
    my ($versions) = $db->selectrow_array(
        q{SELECT string_agg(version::text, ',' ORDER BY version)
            FROM corelog.schema_version});
    is($versions, join(',', @versions),
       "pass $pass: versions 1 to $versions[-1] recorded");
}

is($t->schema_dump('upgrade'), $t->schema_dump('corelog'),
   'the upgraded schema is the schema of a fresh database');

my ($ch) = $db->selectrow_array(q{
    INSERT INTO corelog.channels (account_id, name) VALUES (?, 'c')
    RETURNING id}, undef, $acc);

# the module on the upgraded database

(my $conninfo = $t->pg_conninfo) =~ s/dbname=\S+/dbname=upgrade/;
$t->write_shipped_conf(conninfo => $conninfo);
$t->run;

my @new = map { scalar $db->selectrow_array(qq{
    INSERT INTO corelog.$_ (traffic_source_id) VALUES (?) RETURNING id},
    undef, $ts) } qw(requests responses);

my $r = $t->http(POST => "/core-log/$ts",
    headers => { Authorization => "Bearer $tok",
                 'Content-Type' => 'application/json' },
    body => encode_json({ status => 500, method => 'GET', elapsedTime => 1,
                          corePathnameId => $cp, requestId => $new[0],
                          responseId => $new[1] }));
is($r->{status}, 201, 'a version 1 token writes a core log: 201');

$r = $t->http(POST => "/core-log/$ts",
    headers => { Authorization => "Bearer $tok",
                 'Content-Type' => 'application/json' },
    body => encode_json({ status => 500, method => 'GET', elapsedTime => 1,
                          corePathnameId => $cp, requestId => $rr[0],
                          responseId => $new[1] }));
is($r->{status}, 409, 'the version 1 claim still holds: 409');

$r = $t->http(POST => '/api/v1/log/create',
    headers => { Authorization => "Bearer $tok",
                 'Content-Type' => 'application/json' },
    body => encode_json({ channel_id => $ch, label => 'upgraded' }));
is($r->{status}, 202, 'and a channel log: 202');

my $tok_p = $db->selectrow_array(
    q{SELECT corelog.create_token(?, 'dom', 'proj')}, undef, $acc);
my ($g) = $db->selectrow_array(q{
    INSERT INTO corelog.log_groups (account_id, project_id, name)
    VALUES (?, 'proj', 'g') RETURNING id}, undef, $acc);
my ($st) = $db->selectrow_array(q{
    INSERT INTO corelog.log_streams (log_group_id, name)
    VALUES (?, 's') RETURNING id}, undef, $g);

$r = $t->http(POST => '/v1/logtanks',
    headers => { 'X-Auth-Token' => $tok_p,
                 'Content-Type' => 'application/json' },
    body => encode_json({ logtank => { resource_type => 'LISTENER',
                                       resource_id => 'r1',
                                       log_group_id => $g,
                                       log_stream_id => $st } }));
is($r->{status}, 201, 'and a logtank: 201');

$db->disconnect;
$t->done;
done_testing;
