#!/usr/bin/perl

# One lookup per token at a time in a worker: requests whose token is not
# cached and is being looked up wait for that lookup and get its answer
# (a burst of one new token, or of every token after a reload, costs one
# lookup, not one per request), a 401 or a 503 as well.  The lookups are
# held in flight by a lock on corelog.tokens, so that the burst arrives
# while the first one waits.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 1);
$t->run;

my $dbh = $t->dbh;
my $acc = $t->make_account('acme');

sub status {
    my $r = $t->http(GET => '/status', port => $t->status_port);
    die "status: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return decode_json($r->{body});
}

sub channel_req {
    my ($tok, $ch, $label) = @_;
    return [POST => '/api/v1/log/create',
            headers => { Authorization => "Bearer $tok",
                         'Content-Type' => 'application/json' },
            body => encode_json({ channel_id => $ch, label => $label })];
}

sub logs_of {
    return scalar $dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs WHERE channel_id = ?',
        undef, $_[0]);
}

# lookups of a token waiting for the lock, now
sub waiting {
    return scalar $dbh->selectrow_array(q{
        SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE '%corelog.tokens%'});
}

sub wait_until {
    my ($what, $cond) = @_;
    my $end = time + 10 * $t->timeout_factor;
    sleep 0.05 until $cond->() || time > $end;
    ok($cond->(), $what);
}

# http_many in a child: its answers' statuses are in $file when it exits
sub many_in_background {
    my ($file, $reqs) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $res = $t->http_many($reqs);
        open my $fh, '>', $file or POSIX::_exit(1);
        print $fh join(' ', map { $_->{status} } @$res), "\n";
        close $fh;
        POSIX::_exit(0);
    }
    return $pid;
}

sub statuses_in {
    my ($file) = @_;
    open my $fh, '<', $file or return {};
    my %c;
    $c{$_}++ for split ' ', scalar <$fh> // '';
    return \%c;
}

# the pool connects in the background
wait_until('the pool is up', sub { status()->{pool}{connects} >= 4 });

my $lock = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                        { AutoCommit => 1, RaiseError => 1,
                          PrintError => 0 });

subtest 'a burst of one new token: one lookup, every request answered' => sub {
    my $tok = $t->make_token($acc);
    my $ch = $t->make_channel($acc, 'burst');
    my $before = status()->{tokens};
    my $sent = status()->{statements}{token_lookup}{sent};

    $lock->begin_work;
    $lock->do('LOCK TABLE corelog.tokens IN ACCESS EXCLUSIVE MODE');

    my $file = "$t->{dir}/burst.statuses";
    my $pid = many_in_background($file,
        [map { channel_req($tok, $ch, "b$_") } 1 .. 20]);

    wait_until('the first lookup waits for the lock', sub { waiting() >= 1 });
    sleep 1;    # the other 19 are in by now
    is(waiting(), 1, 'one lookup waits, no other statement for the token');
    is(status()->{tokens}{cache_misses} - $before->{cache_misses}, 20,
       '20 misses');

    $lock->commit;
    waitpid $pid, 0;

    is_deeply(statuses_in($file), { 202 => 20 }, '20 answers: 202');
    is(logs_of($ch), 20, '20 logs committed');

    my $after = status()->{tokens};
    is($after->{lookups} - $before->{lookups}, 1, 'one lookup');
    is(status()->{statements}{token_lookup}{sent} - $sent, 1,
       'in one statement');

    # and now from the cache
    my $res = $t->http_many([map { channel_req($tok, $ch, "c$_") } 1 .. 5]);
    is_deeply([map { $_->{status} } @$res], [(202) x 5], 'then: cached');
    is(status()->{tokens}{lookups} - $before->{lookups}, 1,
       'no other lookup');
};

subtest 'a burst of one unknown token: one lookup, every request 401' => sub {
    my $tok = 'clg_' . ('5a' x 32);
    my $ch = $t->make_channel($acc, 'unknown');
    my $before = status()->{tokens};

    $lock->begin_work;
    $lock->do('LOCK TABLE corelog.tokens IN ACCESS EXCLUSIVE MODE');

    my $file = "$t->{dir}/unknown.statuses";
    my $pid = many_in_background($file,
        [map { channel_req($tok, $ch, "u$_") } 1 .. 10]);

    wait_until('the lookup waits for the lock', sub { waiting() >= 1 });
    sleep 1;
    is(waiting(), 1, 'one lookup waits');

    $lock->commit;
    waitpid $pid, 0;

    is_deeply(statuses_in($file), { 401 => 10 }, '10 answers: 401');
    is(logs_of($ch), 0, 'nothing written');
    is(status()->{tokens}{lookups} - $before->{lookups}, 1, 'one lookup');
};

subtest 'the lookup fails: the requests that waited get its 503' => sub {
    my $tok = $t->make_token($acc);
    my $ch = $t->make_channel($acc, 'timeout');
    my $before = status()->{tokens};

    $lock->begin_work;
    $lock->do('LOCK TABLE corelog.tokens IN ACCESS EXCLUSIVE MODE');

    my $file = "$t->{dir}/timeout.statuses";
    my $pid = many_in_background($file,
        [map { channel_req($tok, $ch, "t$_") } 1 .. 6]);

    wait_until('the lookup waits for the lock', sub { waiting() >= 1 });
    sleep 0.5;
    is(waiting(), 1, 'one lookup waits');

    # held past the lookup's statement timeout (corelog_query_timeout)
    waitpid $pid, 0;
    $lock->commit;

    is_deeply(statuses_in($file), { 503 => 6 }, 'the six: 503')
        or diag explain statuses_in($file);
    is(logs_of($ch), 0, 'nothing written');
    is(status()->{tokens}{lookups} - $before->{lookups}, 1, 'one lookup');

    # nothing of it is left behind: the next request looks the token up
    my $res = $t->http_many([map { channel_req($tok, $ch, "a$_") } 1 .. 3]);
    is_deeply([map { $_->{status} } @$res], [(202) x 3], 'then: 202');
    is(logs_of($ch), 3, 'three logs');
    is(status()->{tokens}{lookups} - $before->{lookups}, 2,
       'after one more lookup');
};

# An identity that no token can have (a project longer than the cache's
# room, in a database whose CHECK was dropped) is not handed to the
# requests that waited: the lookup is dropped for them, and each decides
# again, in turn, with a lookup of its own (the same path as a lookup
# whose request is gone before its answer), and each gets what a lone
# request gets: 500, the identity refused and logged.
subtest 'an identity too large to share: each request looks it up' => sub {
    my $tok = $t->make_token($acc, project => 'p1');
    my $ch = $t->make_channel($acc, 'large');
    my $long = 'p' x 65;

    $dbh->do('ALTER TABLE corelog.tokens'
             . ' DROP CONSTRAINT tokens_project_id_check');
    $dbh->do(q{UPDATE corelog.tokens SET project_id = ?
                WHERE token_hash = sha256(convert_to(?, 'UTF8'))},
             undef, $long, $tok);

    my $before = status()->{tokens};

    $lock->begin_work;
    $lock->do('LOCK TABLE corelog.tokens IN ACCESS EXCLUSIVE MODE');

    my $file = "$t->{dir}/large.statuses";
    my $pid = many_in_background($file,
        [map { channel_req($tok, $ch, "l$_") } 1 .. 6]);

    wait_until('the lookup waits for the lock', sub { waiting() >= 1 });
    sleep 0.5;
    is(waiting(), 1, 'one lookup waits');

    $lock->commit;
    waitpid $pid, 0;

    is_deeply(statuses_in($file), { 500 => 6 }, 'the six: 500')
        or diag explain statuses_in($file);
    is(logs_of($ch), 0, 'nothing written');
    is(status()->{tokens}{lookups} - $before->{lookups}, 6,
       'six lookups: one each, in turn');
    like($t->error_log,
         qr/allowed the caller but gave invalid X-Corelog-Project/,
         'the identity refused, in the error log');

    $dbh->do(q{DELETE FROM corelog.tokens
                WHERE token_hash = sha256(convert_to(?, 'UTF8'))},
             undef, $tok);
    $dbh->do('ALTER TABLE corelog.tokens ADD CONSTRAINT'
             . q{ tokens_project_id_check CHECK (project_id ~ '^[A-Za-z0-9_.-]{1,64}$')});
};

$lock->disconnect;
$t->done;

# the checker through its subrequest for every request (its location is
# not an exact one, so the API location does not read the cache itself):
# the cache is the checker's, counted there
{
    my $v = Corelog::Test->new;
    $v->write_conf(<<'EOF2');
    corelog_status_zone 256k;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/v1/log/create {
            corelog_auth_request /_auth/bearer;
            corelog_api channel_log;
        }

        location /_auth/ {
            internal;
            corelog_token_check bearer;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        location = /status { corelog_status; }
    }
EOF2
    $v->run;

    my $acc3 = $v->make_account('acme');
    my $tok3 = $v->make_token($acc3);
    my $ch3 = $v->make_channel($acc3);
    my $own = sub {
        my $r = $v->http(GET => '/status', port => $v->port2);
        return decode_json($r->{body})->{tokens};
    };
    is($v->http(@{ channel_req($tok3, $ch3, "p$_") })->{status}, 202,
       "through the subrequest, request $_: 202") for 1 .. 3;
    is_deeply([@{ $own->() }{qw(lookups cache_misses cache_hits)}],
              [1, 1, 2], 'one lookup, one miss, then two cache hits');
    $v->done;
}

# worker_shutdown_timeout closes every connection, the one whose lookup
# the others wait for among them, in any order: those that waited are
# answered or closed, and nothing touches a request that is gone (the
# ASan run of this file watches that)
{
    my $v = Corelog::Test->new;
    $v->write_conf(<<'EOF2' . Corelog::Test::routes_server(),
    corelog_connections 2;
    corelog_query_timeout 60s;
EOF2
        main => 'worker_shutdown_timeout 1s;');
    $v->run;

    my $acc2 = $v->make_account('acme');
    my $tok2 = $v->make_token($acc2);
    my $ch2 = $v->make_channel($acc2);
    my $lk = $v->lock_table('corelog.tokens');
    my @socks = map { $v->http_start(@{ channel_req($tok2, $ch2, "s$_") }) }
                1 .. 4;
    ok($v->wait_lock_waiters, 'the lookup waits for the lock');
    sleep 0.5;
    is($v->lock_waiters, 1, 'one lookup for the four');

    my $start = time;
    $v->stop;
    cmp_ok(time - $start, '<', 8, 'nginx exits after worker_shutdown_timeout');
    for my $s (@socks) {
        my $st = $v->http_finish($s, timeout => 5)->{status};
        ok($st == 503 || $st == 0, "503 or closed (got $st)");
    }
    unlike($v->error_log, qr/\[alert\]|open socket|exited on signal/,
           'no alert, no socket left, no crash');

    $lk->rollback;
    $lk->disconnect;
    $v->done;
}

done_testing;
