#!/usr/bin/perl

# 200 concurrent requests on two workers, with verdicts of every kind mixed
# (201, 404 for a missing request or response, 409 for a used pair): each
# answer is the verdict of its own row, and each 201 describes the row
# stored for its request; and 50 concurrent requests for one
# request/response: exactly one 201.

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
    my ($rq, $rs, %more) = @_;
    return [POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $rq, responseId => $rs, %more })];
}

# Every fifth request or so is a 404 or a 409: a row given to the wrong
# request in a statement of several shows as a wrong status (in an
# irregular order, so that neither a shifted nor a reversed row matching
# can pass).  Each request has its own elapsedTime and trafficUserId.

my $used = [$t->make_request_response($ts)];
is($t->http(@{ req(@$used) })->{status}, 201, 'the used pair: 201');

srand 40;
my @kinds = map { (qw(ok ok ok ok ok ok ok used rq rs))[int rand 10] }
            1 .. 200;
my %want = (ok => [201, undef], used => [409, undef],
            rq => [404, 'Request not found'],
            rs => [404, 'Response not found']);

my (@bodies, @reqs);
for my $i (0 .. $#kinds) {
    my ($rq, $rs) = $kinds[$i] eq 'used' ? @$used
                                         : $t->make_request_response($ts);
    $rq = Corelog::Test::uuid() if $kinds[$i] eq 'rq';
    $rs = Corelog::Test::uuid() if $kinds[$i] eq 'rs';
    push @reqs, req($rq, $rs, elapsedTime => $i + 0.5,
                    trafficUserId => "user-$i");
    push @bodies, { requestId => $rq, elapsedTime => $i + 0.5,
                    trafficUserId => "user-$i" };
}

$t->dbh->do('SELECT pg_stat_statements_reset()');
my $res = $t->http_many(\@reqs, timeout => 60);

my $created = grep { $_ eq 'ok' } @kinds;
my %status;
$status{$_->{status}}++ for @$res;
my %want_status;
$want_status{ $want{$_}[0] }++ for @kinds;
is_deeply(\%status, \%want_status,
          "200 answers: $created 201, the rest 404 and 409")
    or diag explain \%status;

my %ids = map { ($_->{json}{id} // '') => 1 } grep { $_->{status} == 201 }
          @$res;
is(scalar(keys %ids), $created, "$created distinct ids");

my $rows = $t->dbh->selectall_arrayref(q{
    SELECT id::text, request_id::text, elapsed_time, traffic_user_id,
           to_char(created_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
      FROM corelog.core_logs WHERE request_id <> $1}, undef, $used->[0]);
is(scalar @$rows, $created, "$created rows");
is_deeply([sort map { $_->[0] } @$rows], [sort keys %ids],
          'the stored ids are the answered ids');

# each answer against the verdict of its request and the row stored for
# its request (none but for a 201)

my %by_request = map { $_->[1] => $_ } @$rows;
my $wrong = 0;
for my $i (0 .. $#kinds) {
    my ($st, $msg) = @{ $want{ $kinds[$i] } };
    my $r = $res->[$i];
    my $b = $bodies[$i];
    my $row = $by_request{ $b->{requestId} };
    my $why;

    if ($r->{status} != $st) {
        $why = "status $r->{status}, want $st";

    } elsif (defined $msg && ($r->{json}{message} // '') ne $msg) {
        $why = 'message "' . ($r->{json}{message} // '') . '"';

    } elsif ($st != 201) {
        $why = 'a row is stored' if $row;

    } elsif (!$row) {
        $why = 'no row stored';

    } else {
        my $j = $r->{json};
        my $got = join ' ', map { $_ // 'null' }
                  @$j{qw(id requestId elapsedTime trafficUserId createdAt)};
        my $want = join ' ', map { $_ // 'null' }
                   $row->[0], $b->{requestId}, @$row[2, 3, 4];
        $why = "answer $got, stored $want" if $got ne $want;
    }

    next unless $why;
    $wrong++;
    diag "request $i ($kinds[$i]): $why" if $wrong <= 5;
}
is($wrong, 0, 'each answer is the verdict and the row of its own request');

my ($calls) = $t->dbh->selectrow_array(q{
    SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
     WHERE query LIKE 'WITH input AS%'});
note "200 requests in $calls statements";

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
