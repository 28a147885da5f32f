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
#     and the pool recovers; a stalled token look-up answers 503 (the
#     token store is unavailable), not 500.

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
    corelog_query_timeout 3s;
    corelog_token_cache 1024 10m;
    client_body_buffer_size 128k;

    # channel logs, for statements of a megabyte
    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }
    }

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

    my $log = $t->wait_log($from, qr/available again/, 10);
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
    like($t->wait_log($from, qr/after preparing/, 5),
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

subtest 'a connection made resets the backoff: a blip after an outage' => sub {
    # the outage above left the delay at its 1 s cap; the connection made
    # since must have reset it to 100 ms
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";
    my $from = length $t->error_log;

    $relay->mode('refuse');
    $t->wait_log($from, qr/PostgreSQL is unavailable/, 5);
    $relay->mode('pass');
    my $start = time;
    $t->wait_log($from, qr/PostgreSQL is available again/, 5);
    my $took = time - $start;
    cmp_ok($took, '<', 0.8, 'reconnected after 100 or 200 ms, not 1 s');
    diag sprintf 'reconnected %.2f s after the server came back', $took;
};

# "waited N ms for a PostgreSQL connection": a 503 that came from the
# queue-wait timer rather than at once
my $waited = qr/waited \d+ ms for a PostgreSQL connection/;

subtest 'the last connection lost: queued writes get 503 at once' => sub {
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";
    my $from = length $t->error_log;

    my $lock = $t->lock_table('corelog.core_log_claims');

    my $sent = $t->http_start(req());
    my $lockwait = $t->wait_lock_waiters;
    ok($lockwait, 'a write in flight waits for the lock');

    my ($rq, $rs) = $t->make_request_response($ts);
    my $queued = $t->http_start(req($rq, $rs));
    sleep 0.2;

    my $start = time;
    $relay->mode('refuse');
    my $r = $t->http_finish($queued);
    my $took = time - $start;
    is($r->{status}, 503, 'the queued write: 503');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    cmp_ok($took, '<', 2, 'at once, not after its wait in the queue');
    isnt($t->http_finish($sent)->{status}, 201,
         'the write in flight is not answered as written');

    $r = $t->http(req());
    is($r->{status}, 503, 'a new write during the outage: 503');

    unlike(substr($t->error_log, $from), $waited,
           'no 503 came from the queue-wait timer');

    $lock->rollback;
    $lock->disconnect;
    sleep 0.3;
    is(stored($rq), 0, 'the queued write was never written');

    $relay->mode('pass');
};

subtest 'a server that stops answering: writes get 503 at once' => sub {
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";
    my $from = length $t->error_log;

    # the connection is lost, and the next attempt hangs in its startup
    $relay->mode('refuse');
    $t->wait_log($from, qr/PostgreSQL is unavailable/, 5);
    my $accepted = $relay->accepted;
    $relay->mode('stall');
    for (1 .. 100) { last if $relay->accepted > $accepted; sleep 0.05 }
    cmp_ok($relay->accepted, '>', $accepted, 'a new attempt hangs');

    my $start = time;
    my $r = $t->http(req());
    my $took = time - $start;
    is($r->{status}, 503, 'status 503');
    cmp_ok($took, '<', 2, 'at once: a retry in progress is not "up"');
    unlike(substr($t->error_log, $from), $waited,
           'not from the queue-wait timer');

    $relay->mode('pass');
    ($secs, @seen) = until_201(10);
    ok(defined $secs, 'the held attempt completes: 201')
        or diag "statuses: @seen";
};

subtest 'a statement larger than the socket buffers is sent in parts' => sub {
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";

    my $ch = $t->make_channel($acc);
    my $big = 'b' x 60000;

    # the channel statement is prepared on the connection first
    is($t->http(POST => '/api/v1/log/create', port => $t->port2,
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => 'warm' }))
       ->{status}, 202, 'a channel log: 202');

    # a write whose answer the relay holds: the 16 big ones queue
    # meanwhile, and go in one statement of about 1 MB once it is answered
    $relay->mode('stall');
    my $first = $t->http_start(POST => '/api/v1/log/create',
        port => $t->port2,
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => 'small' }));
    sleep 0.1;

    my @socks = map {
        $t->http_start(POST => '/api/v1/log/create', port => $t->port2,
            headers => { Authorization => "Bearer $tok",
                         'Content-Type' => 'application/json' },
            body => encode_json({ channel_id => $ch, label => "big-$_",
                                  body => $big }))
    } 1 .. 16;
    sleep 0.3;

    # the first answer goes on, and the relay reads nothing more: the big
    # statement stops in the socket buffers, and goes on when it reads again
    $relay->mode('deaf');
    is($t->http_finish($first)->{status}, 202, 'the first write: 202');
    sleep 0.5;
    $relay->mode('pass');

    my @st = map { $t->http_finish($_)->{status} } @socks;
    is_deeply(\@st, [(202) x 16], 'every write: 202');
    my ($n) = $t->dbh->selectrow_array(q{
        SELECT count(*) FROM corelog.channel_logs
         WHERE label LIKE 'big-%' AND length(body) = 60000});
    is($n, 16, 'every row stored whole');
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
    cmp_ok($took, '<', 7, 'answered at the timeout, not later');
    like(substr($t->error_log, $from),
         qr/corelog: statement unanswered after 1500 ms, closing the connection: its outcome is unknown/,
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

subtest 'a token look-up stalled in the network: 503, not 500' => sub {
    my ($secs, @seen) = until_201(10);
    ok(defined $secs, 'pool up') or diag "statuses: @seen";

    # a token no worker has cached: its check needs a look-up
    my $fresh = $t->make_token($acc);
    my @r = req();
    $r[3]{Authorization} = "Bearer $fresh";

    $relay->mode('stall');
    my $r = $t->http(@r);
    $relay->mode('pass');

    is($r->{status}, 503, 'status 503: the token store is unavailable');
    like($r->{json}{message} // '', qr/token store is unavailable/,
         'says why');

    ($secs, @seen) = until_201(10);
    ok(defined $secs, 'the pool reconnects and writes again')
        or diag "statuses: @seen";
};

$t->done;
$relay->stop;
done_testing;
