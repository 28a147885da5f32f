#!/usr/bin/perl

# worker_shutdown_timeout with writes stuck behind a lock: when it fires,
# nginx closes every connection, the module's PostgreSQL connections too.
# The write in flight gets 504 (its outcome is unknown) or its client is
# closed, the queued one 503 (never written), the worker exits at once
# rather than at corelog_query_timeout, and nothing touches a request that
# is gone (no crash, no alert).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF2' . Corelog::Test::core_log_server(),
    corelog_connections 1;
    corelog_query_timeout 60s;

EOF2
    main => 'worker_shutdown_timeout 1s;');
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

sub stored {
    my ($rq) = @_;
    return scalar $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.core_logs WHERE request_id = $1',
        undef, $rq);
}

is($t->http(req())->{status}, 201, 'warm-up: 201');

my $lock = $t->lock_table('corelog.core_log_claims');

my @a = req();
my $sent = $t->http_start(@a);
my $waiting = $t->wait_lock_waiters;
ok($waiting, 'a write in flight waits for the lock');

my @b = req();
my $queued = $t->http_start(@b);
my $rq_b = { @b[2 .. $#b] }->{request_id};
sleep 0.3;

my $pid = $t->nginx_pid;
my $start = time;
$t->stop;
my $took = time - $start;
cmp_ok($took, '<', 8, 'nginx exits soon after worker_shutdown_timeout, '
                      . 'not at corelog_query_timeout');

my $ra = $t->http_finish($sent, timeout => 5);
my $rb = $t->http_finish($queued, timeout => 5);
ok($ra->{status} == 504 || $ra->{status} == 0,
   "the write in flight: 504 or closed (got $ra->{status})");
ok($rb->{status} == 503 || $rb->{status} == 0,
   "the queued write: 503 or closed (got $rb->{status})");
isnt($ra->{status}, 201, 'no 201 for a write with no known outcome');

like($t->error_log,
     qr/corelog: closing the PostgreSQL connection at shutdown/,
     'the module closed its connection');
unlike($t->error_log, qr/\[alert\]|open socket|exited on signal/,
       'no alert, no socket left, no crash');

$lock->rollback;
$lock->disconnect;
sleep 0.5;
is(stored($rq_b), 0, 'the queued write was never written');

$t->done;
done_testing;
