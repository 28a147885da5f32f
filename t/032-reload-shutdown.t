#!/usr/bin/perl

# Reloads and graceful shutdowns with writes in flight: old workers finish
# their statements and answer, new workers open their own pools, and
# nothing is left open or logged as an alert.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

my $n = 0;

sub req {
    return (POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => 'l' . ++$n }));
}

sub stored {
    my ($label) = @_;
    return scalar $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs WHERE label = $1',
        undef, $label);
}

sub lock_logs {
    my $dbh = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                           { AutoCommit => 0, RaiseError => 1 });
    $dbh->do('LOCK TABLE corelog.channel_logs IN ACCESS EXCLUSIVE MODE');
    return $dbh;
}

sub waiting {
    for (1 .. 50) {
        my ($w) = $t->dbh->selectrow_array(q{
            SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'nginx-corelog'
               AND wait_event_type = 'Lock'});
        return $w if $w;
        sleep 0.05;
    }
    return 0;
}

is($t->http(req())->{status}, 202, 'before the reload: 202');

subtest 'reload with writes in flight' => sub {
    my $lock = lock_logs();
    my @socks = map { $t->http_start(req()) } 1 .. 4;
    my @labels = map { "l$_" } $n - 3 .. $n;
    ok(waiting(), 'the writes wait for the lock');

    ok($t->reload(wait_old => 0), 'reload: new workers started');

    $lock->rollback;
    $lock->disconnect;

    my @st = map { $t->http_finish($_)->{status} } @socks;
    is_deeply(\@st, [202, 202, 202, 202],
              'the old workers answer their writes');
    is(stored($_), 1, "$_ stored") for @labels;

    my $ok = 0;
    for (1 .. 20) {
        my @r = req();
        $ok++ if $t->http(@r)->{status} == 202;
    }
    is($ok, 20, 'the new workers write');
};

subtest 'reload twice in a row, then write' => sub {
    ok($t->reload, 'first reload');
    ok($t->reload, 'second reload');
    is($t->http(req())->{status}, 202, 'a write after both: 202');
};

subtest 'graceful shutdown with a write in flight' => sub {
    my $lock = lock_logs();
    my @r = req();
    my $label = "l$n";
    my $sock = $t->http_start(@r);
    ok(waiting(), 'the write waits for the lock');

    kill 'QUIT', $t->nginx_pid;
    sleep 0.5;
    $lock->rollback;
    $lock->disconnect;

    my $r = $t->http_finish($sock);
    is($r->{status}, 202, 'the write is answered before the worker exits');
    is(stored($label), 1, 'and stored');

    for (1 .. 100) {
        last unless kill 0, $t->nginx_pid;
        sleep 0.05;
    }
    ok(!kill(0, $t->nginx_pid), 'nginx has exited');
};

unlike($t->error_log, qr/\[alert\]|open socket|exited on signal/,
       'no alert, no socket left, no crash');

$t->done;
done_testing;
