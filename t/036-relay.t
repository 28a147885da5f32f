#!/usr/bin/perl

# nginx talks to PostgreSQL through Corelog::Relay, which can lie about
# the transaction status, refuse connections or stall the server's answers:
#
#   - a statement after which the server reports the session still in a
#     transaction is not answered as written (500, the connection closed);
#     a Parse after which it does fails with 503 and writes nothing;
#   - during an outage the reconnect backoff stays capped at 1 s, so the
#     pool is back within about a second once the server is;
#   - an answer stalled in the network gets 504 at corelog_query_timeout,
#     and the pool recovers.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;
use Corelog::Relay;

my $t = Corelog::Test->new;
my $relay = Corelog::Relay->new($t);

my $conninfo = $relay->conninfo;

# One connection, so that every statement takes the same path.
$t->write_conf(<<"EOF" . Corelog::Test::core_log_server(), no_postgres => 1);
    corelog_postgres "$conninfo";
    corelog_connections 1;
    corelog_query_timeout 1500ms;
    corelog_token_cache 1024 10m;

EOF
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

# a write with a fresh request/response pair, or the same one again
sub req {
    my ($rq, $rs) = @_;
    ($rq, $rs) = $t->make_request_response($ts) unless defined $rq;
    return (POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $rq, responseId => $rs }));
}

sub stored {
    my ($rq) = @_;
    my ($n) = $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.core_logs WHERE request_id = $1',
        undef, $rq);
    return $n;
}

# the backend pids of nginx's sessions
sub backends {
    my $pids = $t->dbh->selectcol_arrayref(q{
        SELECT pid FROM pg_stat_activity
         WHERE application_name = 'nginx-corelog' ORDER BY pid});
    return "@$pids";
}

# polls with fresh writes every 0.1 s until a 201, at most $secs; returns
# the seconds it took (undef if none came) and the statuses seen
sub until_201 {
    my ($secs) = @_;
    my @seen;
    my $start = time;
    while (time < $start + $secs) {
        my $r = $t->http(req());
        push @seen, $r->{status};
        return (time - $start, @seen) if $r->{status} == 201;
        sleep 0.1;
    }
    return (undef, @seen);
}

# the error log from $from on, once it matches $re (at most $secs)
sub wait_log {
    my ($from, $re, $secs) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $log = substr $t->error_log, $from;
        return $log if $log =~ $re || time > $deadline;
        sleep 0.05;
    }
}

sub count { my ($text, $re) = @_; my $n = () = $text =~ /$re/g; $n }

# The first connection and the warm-up: the token is in the cache and the
# write statement is prepared on the pool's only connection.
{
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'warm-up: 201') or diag "statuses: @seen";
}

subtest 'the server reports a transaction left open' => sub {
    my $old = backends();
    like($old, qr/^\d+$/, 'one session');
    my $accepted = $relay->accepted;
    my $from = length $t->error_log;

    $relay->mode('intrans');

    # the statement commits, but its ReadyForQuery says 'T'
    my ($rq, $rs) = $t->make_request_response($ts);
    my $r = $t->http(req($rq, $rs));
    is($r->{status}, 500, 'not answered as written: 500');
    is($r->{json}{name}, 'InternalServerError', 'JSON error');
    is(stored($rq), 1, '(the relay changed only the status byte)');

    my $log = wait_log($from, qr/available again/, 10);
    like($log, qr/\[error\].*corelog: connection left in transaction state 2, closing it/,
         'logged');
    like($log, qr/corelog: PostgreSQL is available again/,
         'and a new connection is made');

    # The new connection must prepare the write: the Parse's ReadyForQuery
    # says 'T' too, and the statement must not be sent after it.
    ($rq, $rs) = $t->make_request_response($ts);
    $r = $t->http(req($rq, $rs));
    is($r->{status}, 503, 'a Parse left in a transaction: 503');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    is(stored($rq), 0, 'nothing written');
    like(wait_log($from, qr/after preparing/, 5),
         qr/\[error\].*corelog: connection in transaction state 2 after preparing "[^"]+", closing it/,
         'logged');

    $relay->mode('pass');

    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'back to normal: 201') or diag "statuses: @seen";
    my $new = backends();
    like($new, qr/^\d+$/, 'one session');
    isnt($new, $old, 'a new backend');
    cmp_ok($relay->accepted, '>=', $accepted + 2,
           'two connections were made meanwhile');

    $log = substr $t->error_log, $from;
    is(count($log, qr/connection left in transaction state/), 1,
       'one "left in transaction" line (the Parse is not a write)');
};

subtest 'reconnect backoff stays capped at 1 s' => sub {
    my $from = length $t->error_log;

    # a server that is down, but answers fast, for 8 s: an uncapped
    # backoff would sleep 6.4 s from 6.3 s on
    $relay->mode('refuse');
    my $start = time;

    my @seen;
    while (time < $start + 8) {
        sleep 1;
        my $r = $t->http(req());
        push @seen, $r->{status};
        if (@seen == 3) {
            is($r->{status}, 503, 'during the outage: 503');
            is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
            is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
        }
    }
    ok(!grep({ $_ != 503 } @seen), 'only 503 during the outage')
        or diag "statuses: @seen";

    $relay->mode('pass');

    my ($secs, @after) = until_201(15);
    ok(defined $secs, 'a 201 after the server came back')
        or diag "statuses: @after";
    cmp_ok($secs // 99, '<', 2.5,
           'within the 1 s cap (plus margin) of the server coming back');
    diag sprintf '201 again %.2f s after the server came back', $secs
        if defined $secs;

    my $log = substr $t->error_log, $from;
    my $lines = () = $log =~ /\n/g;
    cmp_ok($lines, '<', 30, 'the error log is not flooded')
        or diag $log;
    is(count($log, qr/corelog: PostgreSQL is unavailable/), 1,
       '"PostgreSQL is unavailable" once');
    is(count($log, qr/corelog: PostgreSQL is available again/), 1,
       '"available again" once');
};

subtest 'an answer stalled in the network: 504, then recovery' => sub {
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";

    my $from = length $t->error_log;
    $relay->mode('stall');

    my ($rq, $rs) = $t->make_request_response($ts);
    my $start = time;
    my $r = $t->http(req($rq, $rs));
    my $took = time - $start;
    is($r->{status}, 504, 'status 504');
    is($r->{json}{name}, 'GatewayTimeout', 'JSON error');
    cmp_ok($took, '>=', 1, 'not before the timeout');
    cmp_ok($took, '<', 5, 'answered at the timeout, not later');
    like(substr($t->error_log, $from),
         qr/corelog: statement timed out after 1500 ms, resetting the connection/,
         'logged');

    $relay->mode('pass');

    ($secs, @seen) = until_201(10);
    ok(defined $secs, 'the pool reconnects and writes again')
        or diag "statuses: @seen";

    # the stalled statement did commit: the same body again is a conflict
    is(stored($rq), 1, 'the stalled write was committed');
    $r = $t->http(req($rq, $rs));
    is($r->{status}, 409, 'sent again: 409');
    is($r->{json}{name}, 'Conflict', 'JSON error');
};

$t->done;
$relay->stop;
done_testing;
