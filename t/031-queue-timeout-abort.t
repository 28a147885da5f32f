#!/usr/bin/perl

# The write path under stress: a statement past its share of
# corelog_query_timeout (ended by PostgreSQL's statement_timeout, rolled
# back: 503, the connection kept), a full queue (503 + Retry-After), a queue wait
# past the timeout, and clients that close their connection mid-insert or
# mid-auth: the request ends (499, as with proxy_pass), a write in flight
# finishes on its own, a queued one leaves the queue unsent; nothing
# crashes or leaks.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF2' . Corelog::Test::core_log_server());
    corelog_connections 1;
    corelog_queue_max 2;
    corelog_query_timeout 6s;

EOF2
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

sub req {
    my ($rq, $rs) = $t->make_request_response($ts);
    return (POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $rq, responseId => $rs }),
        request_id => $rq);
}

# requests that ended because their client went away
sub closed {
    my @n = ($t->access_log // '') =~ m{ 499 }g;
    return scalar @n;
}

sub stored {
    my ($rq) = @_;
    my ($n) = $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.core_logs WHERE request_id = $1',
        undef, $rq);
    return $n;
}

# nginx's PostgreSQL sessions
sub backends {
    return $t->dbh->selectcol_arrayref(q{
        SELECT pid FROM pg_stat_activity
         WHERE application_name = 'nginx-corelog' ORDER BY pid});
}

# warm the token cache: the auth subrequest then needs no query
is($t->http(req())->{status}, 201, 'warm-up: 201');

subtest 'a statement past the timeout: ended in PostgreSQL, 503' => sub {
    my $pids = backends();
    my $lock = $t->lock_table('corelog.core_log_claims');
    my @r = req();
    my $rq = { @r[2 .. $#r] }->{request_id};
    my $start = time;
    my $r = $t->http(@r);
    my $took = time - $start;
    is($r->{status}, 503, 'status 503: rolled back, a retry is safe');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');

    # statement_timeout is 4/5 of half of corelog_query_timeout: 2.4 s
    cmp_ok($took, '>', 2, 'PostgreSQL waited its statement_timeout');
    cmp_ok($took, '<', 3, 'and ended it before the module gave up (3 s)');
    is($t->lock_waiters, 0, 'nothing of nginx waits for the lock any more');
    $lock->rollback;
    $lock->disconnect;
    sleep 0.3;
    is(stored($rq), 0, 'not stored after the lock is gone either');

    like($t->error_log, qr/corelog: statement failed with SQLSTATE 57014: canceling statement due to statement timeout/,
         'logged');
    unlike($t->error_log, qr/statement unanswered|PostgreSQL is unavailable/,
           'the connection was not closed');
    is_deeply(backends(), $pids, 'the same PostgreSQL session writes on');
    is($t->http(req())->{status}, 201, 'and the next write: 201');
};

subtest 'queue full: 503 with Retry-After' => sub {
    my $lock = $t->lock_table('corelog.core_log_claims');

    # one statement in flight, two queued
    my @socks;
    my @rq;
    for my $i (1 .. 3) {
        my @r = req();
        push @rq, { @r[2 .. $#r] }->{request_id};
        push @socks, $t->http_start(@r);
        ok($t->wait_lock_waiters, 'the first one waits for the lock') if $i == 1;
    }
    sleep 0.2;

    my $r = $t->http(req());
    is($r->{status}, 503, 'the fourth: 503');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    like($r->{json}{message}, qr/pending/, 'says why');
    is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');

    $lock->rollback;
    $lock->disconnect;

    my @st = map { $t->http_finish($_)->{status} } @socks;
    is_deeply(\@st, [201, 201, 201], 'the three accepted ones: 201');
    is(stored($_), 1, 'stored') for @rq;
};

subtest 'a queued write behind a statement that times out: 503, neither written' => sub {
    my $lock = $t->lock_table('corelog.core_log_claims');

    my @a = req();
    my $first = $t->http_start(@a);
    ok($t->wait_lock_waiters, 'the first one holds the only connection');

    my @b = req();
    my $rq = { @b[2 .. $#b] }->{request_id};
    my $r = $t->http(@b);
    is($r->{status}, 503, 'the queued one: 503 after the wait');

    $lock->rollback;
    $lock->disconnect;
    is($t->http_finish($first)->{status}, 503, 'the first one: 503');
    sleep 0.5;
    is(stored($rq), 0, 'the queued one was never written');
    is(stored({ @a[2 .. $#a] }->{request_id}), 0,
       'nor the first one, ended by PostgreSQL');
};

subtest 'client closes while its insert is in flight' => sub {
    my $ok;
    for (1 .. 50) {
        $ok = $t->http(req())->{status} == 201 and last;
        sleep 0.1;
    }
    ok($ok, 'pool up');

    my $lock = $t->lock_table('corelog.core_log_claims');
    my @r = req();
    my $rq = { @r[2 .. $#r] }->{request_id};
    my $before = closed();
    my $sock = $t->http_start(@r);
    ok($t->wait_lock_waiters, 'the insert waits');
    close $sock;
    sleep 0.2;
    $lock->commit;
    $lock->disconnect;
    sleep 0.3;

    is(stored($rq), 1, 'the insert finished on its own');
    is(closed(), $before + 1, 'the request ended when its client left (499)');
    is($t->http(req())->{status}, 201, 'nginx still serves');
};

subtest 'clients close while their writes are queued: the queue forgets them' => sub {
    my $lock = $t->lock_table('corelog.core_log_claims');
    my $before = closed();

    my @a = req();
    my $first = $t->http_start(@a);
    ok($t->wait_lock_waiters, 'the first one holds the only connection');

    # two queued (corelog_queue_max 2), then gone
    my @rq;
    my @socks;
    for (1 .. 2) {
        my @r = req();
        push @rq, { @r[2 .. $#r] }->{request_id};
        push @socks, $t->http_start(@r);
    }
    sleep 0.3;
    close $_ for @socks;
    my $ended;
    for (1 .. 50) { last if ($ended = closed() - $before) == 2; sleep 0.05 }
    is($ended, 2, 'both requests ended (499)');

    # their places in the queue are free again
    my @c = req();
    my @d = req();
    my @later = map { $t->http_start(@$_) } \@c, \@d;
    sleep 0.3;

    $lock->rollback;
    $lock->disconnect;

    is($t->http_finish($first)->{status}, 201, 'the first one: 201');
    is_deeply([ map { $t->http_finish($_)->{status} } @later ], [201, 201],
              'two more fit in the queue: 201');
    is(stored($_), 0, 'a write whose client left before it went: not stored')
        for @rq;
};

subtest 'a token look-up past the timeout: 503, the token store unavailable' => sub {
    my $fresh = $t->make_token($acc);
    my $lock = $t->lock_table('corelog.tokens');
    my @r = req();
    $r[3]{Authorization} = "Bearer $fresh";
    my $r = $t->http(@r);
    $lock->rollback;
    $lock->disconnect;
    is($r->{status}, 503, 'status 503');
    like($r->{json}{message} // '', qr/token store is unavailable/,
         'the token store is unavailable');
    is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
};

subtest 'a token of the wrong shape needs no look-up: 401 at once' => sub {
    my $ok;
    for (1 .. 50) {
        $ok = $t->http(req())->{status} == 201 and last;
        sleep 0.1;
    }
    ok($ok, 'pool up');

    # with the token table locked, a look-up could not answer 401
    my $lock = $t->lock_table('corelog.tokens');
    for my $bad ('clg_' . ('g' x 64), 'clg_' . ('A' x 64),
                 'clg_' . ('a' x 63), 'clg_' . ('a' x 65),
                 'clx_' . ('a' x 64))
    {
        my @r = req();
        $r[3]{Authorization} = "Bearer $bad";
        my $r = $t->http(@r);
        is($r->{status}, 401, substr($bad, 0, 8) . '... (' . length($bad)
                              . ' characters): 401');
    }
    $lock->rollback;
    $lock->disconnect;
};

subtest 'client closes while the auth lookup is in flight' => sub {
    my $fresh = $t->make_token($acc);
    my $lock = $t->lock_table('corelog.tokens');
    my @r = req();
    $r[3]{Authorization} = "Bearer $fresh";
    my $before = closed();
    my $sock = $t->http_start(@r);
    ok($t->wait_lock_waiters, 'the token lookup waits');
    close $sock;
    sleep 0.2;
    $lock->rollback;
    $lock->disconnect;
    sleep 0.3;

    is(closed(), $before + 1, 'the request ended when its client left (499)');
    is($t->http(req())->{status}, 201, 'nginx still serves');
};

subtest 'many clients closing mid-insert' => sub {
    my $lock = $t->lock_table('corelog.core_log_claims');
    my @socks = map { $t->http_start(req()) } 1 .. 2;
    sleep 0.3;
    close $_ for @socks;
    $lock->rollback;
    $lock->disconnect;
    sleep 0.5;
    is($t->http(req())->{status}, 201, 'nginx still serves');
};

$t->stop;
unlike($t->error_log, qr/\[alert\]|open socket|exited on signal/,
       'no alert, no socket left, no crash at shutdown');

$t->done;
done_testing;
