#!/usr/bin/perl

# 200 concurrent requests on two workers: 200 rows, 200 distinct ids; and
# 50 concurrent requests for one request/response: exactly one 201.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

sub req {
    my ($rq, $rs) = @_;
    return [POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $rq, responseId => $rs })];
}

my @pairs = map { [$t->make_request_response($ts)] } 1 .. 200;
my $res = $t->http_many([map { req(@$_) } @pairs], timeout => 60);

my %status;
$status{$_->{status}}++ for @$res;
is_deeply(\%status, { 201 => 200 }, '200 answers, all 201')
    or diag explain \%status;

my %ids = map { ($_->{json}{id} // '') => 1 } @$res;
is(scalar(keys %ids), 200, '200 distinct ids');

my $rows = $t->dbh->selectall_arrayref(
    'SELECT id::text, request_id::text FROM corelog.core_logs');
is(scalar @$rows, 200, '200 rows');
is_deeply([sort map { $_->[0] } @$rows], [sort keys %ids],
          'the stored ids are the answered ids');

my %by_request = map { $_->[1] => $_->[0] } @$rows;
my $match = grep { ($by_request{$_->[0]{requestId} // ''} // '')
                   eq ($_->[0]{id} // 'x') }
            map { [$_->{json}] } @$res;
is($match, 200, 'each answer is the row of its own request');

# the one-core-log-per-request rule under a race

my ($rq, $rs) = $t->make_request_response($ts);
$res = $t->http_many([map { req($rq, $rs) } 1 .. 50], timeout => 60);

%status = ();
$status{$_->{status}}++ for @$res;
is_deeply(\%status, { 201 => 1, 409 => 49 }, 'one 201, 49 conflicts')
    or diag explain \%status;

my ($n) = $t->dbh->selectrow_array(
    'SELECT count(*) FROM corelog.core_logs WHERE request_id = $1',
    undef, $rq);
is($n, 1, 'one row for the request');

$t->done;
done_testing;
