#!/usr/bin/perl

# Migration 004: the log tables have no foreign keys, and the guarantee
# they gave holds without them.  A referenced traffic source, pathname,
# request, response, channel, log group, log stream or account cannot be
# deleted (23503, the row stays), nor its key changed, nor its table
# truncated; an unreferenced one can.  A channel deleted while a log of it
# is written: either the write waits for the delete and answers 404, or
# the delete waits for the write and fails; never an orphan.  No log row
# refers to a missing parent at the end, and log partitions still detach
# and drop.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use DBD::Pg qw(:async);
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;
my $dbh = $t->dbh;

# partitions covering now, so that the module's rows land in a partition
# that is detached and dropped at the end
for my $tab (qw(core_logs channel_logs)) {
    $dbh->do(qq{CREATE TABLE corelog.${tab}_now PARTITION OF corelog.$tab
                FOR VALUES FROM (now() - interval '1 day')
                             TO (now() + interval '1 day')});
}

$t->write_shipped_conf;
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $tok_p = $t->make_token($acc, domain => 'dom', project => 'proj');

sub post_core {
    my ($s) = @_;
    return $t->http(POST => "/core-log/$s->{traffic_source_id}",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $s->{request_id},
                              responseId => $s->{response_id} }));
}

sub channel_req {
    my ($ch, $label) = @_;
    return (POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => $label }));
}

sub post_logtank {
    my ($g, $s, $res) = @_;
    return $t->http(POST => '/v1/logtanks',
        headers => { 'X-Auth-Token' => $tok_p,
                     'Content-Type' => 'application/json' },
        body => encode_json({ logtank => { resource_type => 'LISTENER',
                                           resource_id => $res,
                                           log_group_id => $g,
                                           log_stream_id => $s } }));
}

# try($sql, @bind): undef if it ran, else the SQLSTATE it failed with
sub try {
    my ($sql, @bind) = @_;
    local $dbh->{RaiseError} = 1;
    return eval { $dbh->do($sql, undef, @bind); 1 } ? undef : $dbh->state;
}

sub exists_row {
    my ($table, $id) = @_;
    return scalar $dbh->selectrow_array(
        "SELECT count(*) FROM corelog.$table WHERE id = ?", undef, $id);
}

subtest 'the log tables have no foreign keys; the others keep theirs' => sub {
    my $fk = $dbh->selectall_arrayref(q{
        SELECT conrelid::regclass::text, count(*)
          FROM pg_constraint
         WHERE contype = 'f' AND connamespace = 'corelog'::regnamespace
         GROUP BY 1 ORDER BY 1});
    is_deeply($fk, [['corelog.channels', 1], ['corelog.core_pathnames', 1],
                    ['corelog.log_groups', 1], ['corelog.log_streams', 1],
                    ['corelog.requests', 1], ['corelog.responses', 1],
                    ['corelog.tokens', 1], ['corelog.traffic_sources', 1]],
              'foreign keys between the reference tables only')
        or diag explain $fk;
};

# referenced parents: one of each, with a log written by the module

my $s = $t->seed_corelog($acc);
is(post_core($s)->{status}, 201, 'a core log: 201');
my $ch = $t->make_channel($acc, 'used');
is($t->http(channel_req($ch, 'x'))->{status}, 202, 'a channel log: 202');
my $g = $t->make_log_group($acc, 'proj', 'used');
my $st = $t->make_log_stream($g, 'used');
is(post_logtank($g, $st, 'r1')->{status}, 201, 'a logtank: 201');

my @referenced = (
    [traffic_sources => $s->{traffic_source_id}, 'core_logs'],
    [core_pathnames  => $s->{core_pathname_id},  'core_logs'],
    [requests        => $s->{request_id},        'core_log'],
    [responses       => $s->{response_id},       'core_log'],
    [channels        => $ch,                     'channel_logs'],
    [log_groups      => $g,                      'logtanks'],
    [log_streams     => $st,                     'logtanks'],
    [accounts        => $acc,                    undef],
);

for my $p (@referenced) {
    my ($table, $id, $child) = @$p;
    subtest "a referenced row of $table" => sub {
        is(try("DELETE FROM corelog.$table WHERE id = ?", $id), '23503',
           'DELETE: 23503');
        like($dbh->errstr, qr/\Q$child\E/, "the message names $child")
            if defined $child;
        is(exists_row($table, $id), 1, 'the row stays');
        is(try("UPDATE corelog.$table SET id = gen_random_uuid()
                 WHERE id = ?", $id), '23503', 'UPDATE of its id: 23503');
        is(try("UPDATE corelog.$table SET created_at = now() WHERE id = ?",
               $id), undef, 'UPDATE of another column: fine');
        is(try("TRUNCATE corelog.$table CASCADE"), '0A000',
           'TRUNCATE: refused');
        is(exists_row($table, $id), 1, 'the row stays');
    };
}

subtest 'the scope of a referenced pathname or stream cannot change' => sub {
    my $other = $dbh->selectrow_array(q{
        INSERT INTO corelog.traffic_sources (account_id, name)
        VALUES (?, 'other') RETURNING id}, undef, $acc);
    is(try('UPDATE corelog.core_pathnames SET traffic_source_id = ?
             WHERE id = ?', $other, $s->{core_pathname_id}), '23503',
       'the traffic source of a referenced pathname: 23503');
    my $g2 = $t->make_log_group($acc, 'proj', 'other');
    is(try('UPDATE corelog.log_streams SET log_group_id = ? WHERE id = ?',
           $g2, $st), '23503', 'the group of a referenced stream: 23503');
};

subtest 'the claim of a core log stays while the core log does' => sub {
    is(try('DELETE FROM corelog.core_log_claims WHERE request_id = ?',
           $s->{request_id}), '23503', 'DELETE: 23503');
    like($dbh->errstr, qr/core_logs/, 'the message names core_logs');
    my ($rq2) = $t->make_request_response($s->{traffic_source_id});
    is(try('UPDATE corelog.core_log_claims SET request_id = ?
             WHERE request_id = ?', $rq2, $s->{request_id}), '23503',
       'UPDATE of its request: 23503');
    is(try('TRUNCATE corelog.core_log_claims'), '0A000', 'TRUNCATE: refused');
    is($dbh->selectrow_array(q{SELECT count(*) FROM corelog.core_log_claims
                                WHERE request_id = ?}, undef,
                             $s->{request_id}), 1, 'the claim stays');
};

subtest 'under REPEATABLE READ a delete is refused (0A000)' => sub {
    my $free = $t->make_channel($acc, 'free');
    $dbh->begin_work;
    $dbh->do('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    is(try('DELETE FROM corelog.channels WHERE id = ?', $free), '0A000',
       'refused');
    $dbh->rollback;
    is(exists_row('channels', $free), 1, 'the channel stays');
};

subtest 'unreferenced rows delete' => sub {
    my $acc2 = $t->make_account('free');
    my $s2 = $t->seed_corelog($acc2);
    my $ch2 = $t->make_channel($acc2);
    my $g2 = $t->make_log_group($acc2, 'p');
    my $st2 = $t->make_log_stream($g2);
    for my $p ([requests => $s2->{request_id}],
               [responses => $s2->{response_id}],
               [core_pathnames => $s2->{core_pathname_id}],
               [log_streams => $st2], [log_groups => $g2],
               [channels => $ch2]) {
        is(try("DELETE FROM corelog.$p->[0] WHERE id = ?", $p->[1]), undef,
           "$p->[0]: deleted");
        is(exists_row(@$p), 0, "$p->[0]: gone");
    }
    my $s3 = $t->seed_corelog($acc2);
    is(try('DELETE FROM corelog.accounts WHERE id = ?', $acc2), undef,
       'an account with an unused traffic source: deleted (cascades)');
    is(exists_row(traffic_sources => $s3->{traffic_source_id}), 0,
       'its traffic source gone');
};

subtest 'the ownership checks still answer 404' => sub {
    my $free = $t->make_channel($acc, 'then gone');
    $dbh->do('DELETE FROM corelog.channels WHERE id = ?', undef, $free);
    is($t->http(channel_req($free, 'gone'))->{status}, 404,
       'a deleted channel: 404');
    my $s2 = $t->seed_corelog($acc);
    $dbh->do('DELETE FROM corelog.requests WHERE id = ?', undef,
             $s2->{request_id});
    is(post_core($s2)->{status}, 404, 'a deleted request: 404');
};

# the race, with a second session

sub session {
    return DBI->connect($t->_dsn('corelog'), 'postgres', '',
                        { AutoCommit => 1, RaiseError => 1,
                          PrintError => 0 });
}

sub logs_of {
    my ($ch) = @_;
    return scalar $dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs WHERE channel_id = ?',
        undef, $ch);
}

subtest 'race: the delete first, the write waits and answers 404' => sub {
    my $victim = $t->make_channel($acc, 'deleted first');
    my $d = session();
    $d->begin_work;
    $d->do('DELETE FROM corelog.channels WHERE id = ?', undef, $victim);

    my $h = $t->http_start(channel_req($victim, 'racing'));
    ok($t->wait_lock_waiters, 'the write waits for the delete');
    $d->commit;
    my $r = $t->http_finish($h);
    is($r->{status}, 404, 'then answers 404');
    is(logs_of($victim), 0, 'nothing stored');
    $d->disconnect;
};

subtest 'race: the write first, the delete waits and fails' => sub {
    my $victim = $t->make_channel($acc, 'written first');

    # hold the write after it locked its channel: its row trigger waits
    # for an advisory lock that a third session holds
    my $hold = session();
    $hold->do('SELECT pg_advisory_lock(6200)');
    $dbh->do(q{
        CREATE FUNCTION corelog.t062_hold() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(6200);
            RETURN NEW;
        END $$});
    $dbh->do(q{CREATE TRIGGER t062_hold BEFORE INSERT ON corelog.channel_logs
               FOR EACH ROW EXECUTE FUNCTION corelog.t062_hold()});

    my $h = $t->http_start(channel_req($victim, 'racing'));
    ok($t->wait_lock_waiters, 'the write holds its lock and waits');

    my $d = session();
    my $del = $d->prepare('DELETE FROM corelog.channels WHERE id = ?',
                          { pg_async => PG_ASYNC });
    $del->execute($victim);
    my $deadline = time + 10 * $t->timeout_factor;
    my $waits = 0;
    while (time < $deadline) {
        $waits = $dbh->selectrow_array(q{
            SELECT count(*) FROM pg_stat_activity
             WHERE pid = ? AND wait_event_type = 'Lock'}, undef,
            $d->{pg_pid});
        last if $waits || $d->pg_ready;
        sleep 0.05;
    }
    ok($waits, 'the delete waits for the write');

    $hold->do('SELECT pg_advisory_unlock(6200)');
    my $r = $t->http_finish($h);
    is($r->{status}, 202, 'the write: 202');

    my $state = eval { $d->pg_result; 1 } ? undef : $d->state;
    is($state, '23503', 'the delete: 23503');
    is(exists_row(channels => $victim), 1, 'the channel stays');
    is(logs_of($victim), 1, 'its log stored');

    $dbh->do('DROP TRIGGER t062_hold ON corelog.channel_logs');
    $dbh->do('DROP FUNCTION corelog.t062_hold()');
    $_->disconnect for $d, $hold;
};

subtest 'race: many writes and deletes at once, no orphan' => sub {
    my @chs = map { $t->make_channel($acc, "c$_") } 1 .. 20;
    my $d = session();
    my @reqs = map { my $c = $_; map { [channel_req($c, "m$_")] } 1 .. 5 }
               @chs;
    # the deletes, one statement each, run while the writes go in
    my @pending = @chs;
    my $deleted = 0;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $dd = session();
        for my $c (@pending) {
            eval { $dd->do('DELETE FROM corelog.channels WHERE id = ?',
                           undef, $c) };
            sleep 0.002;
        }
        $dd->disconnect;
        require POSIX;
        POSIX::_exit(0);
    }
    my $res = $t->http_many(\@reqs);
    waitpid $pid, 0;
    my %st;
    $st{$_->{status}}++ for @$res;
    note('answers: ' . join ', ', map { "$_ x $st{$_}" } sort keys %st);
    is_deeply([sort keys %st], [grep { $st{$_} } qw(202 404)],
              'every write: 202 or 404') or diag explain \%st;
    my $orphans = $dbh->selectrow_array(q{
        SELECT count(*) FROM corelog.channel_logs l
         WHERE NOT EXISTS (SELECT 1 FROM corelog.channels c
                            WHERE c.id = l.channel_id)});
    is($orphans, 0, 'no orphan channel log');
    $d->disconnect;
};

subtest 'no orphan anywhere' => sub {
    my %anti = (
        'core_logs.traffic_source_id' => 'traffic_sources',
        'core_logs.core_pathname_id'  => 'core_pathnames',
        'core_logs.request_id'        => 'requests',
        'core_logs.response_id'       => 'responses',
        'core_log_claims.request_id'  => 'requests',
        'core_log_claims.response_id' => 'responses',
        'channel_logs.channel_id'     => 'channels',
        'logtanks.account_id'         => 'accounts',
        'logtanks.log_group_id'       => 'log_groups',
        'logtanks.log_stream_id'      => 'log_streams',
    );
    for my $ref (sort keys %anti) {
        my ($child, $col) = split /\./, $ref;
        my $n = $dbh->selectrow_array(qq{
            SELECT count(*) FROM corelog.$child l
             WHERE NOT EXISTS (SELECT 1 FROM corelog.$anti{$ref} p
                                WHERE p.id = l.$col)});
        is($n, 0, "$ref: every row has its $anti{$ref}");
    }
};

subtest 'log partitions detach and drop; then the parents delete' => sub {
    is(try('ALTER TABLE corelog.channel_logs
              DETACH PARTITION corelog.channel_logs_now'), undef,
       'channel_logs: DETACH');
    is(try('DROP TABLE corelog.channel_logs_now'), undef, 'and DROP');
    is(try('DROP TABLE corelog.core_logs_now'), undef,
       'core_logs: DROP without detaching');
    is(try('DELETE FROM corelog.channels WHERE id = ?', $ch), undef,
       'the channel whose logs went with the partition: deleted');
    is(try('DELETE FROM corelog.traffic_sources WHERE id = ?',
           $s->{traffic_source_id}), '23503',
       'a traffic source whose claims stay: 23503');
    is(try('DELETE FROM corelog.core_log_claims WHERE request_id = ?',
           $s->{request_id}), undef, 'its claims deleted');
    is(try('DELETE FROM corelog.traffic_sources WHERE id = ?',
           $s->{traffic_source_id}), undef, 'then the traffic source');
};

subtest 'FOR KEY SHARE needs UPDATE; the functions do not' => sub {
    $dbh->do('CREATE ROLE t062_ro LOGIN');
    $dbh->do('GRANT USAGE ON SCHEMA corelog TO t062_ro');
    $dbh->do('GRANT SELECT ON corelog.channels TO t062_ro');
    my $ro = DBI->connect($t->_dsn('corelog'), 't062_ro', '',
                          { AutoCommit => 1, RaiseError => 0,
                            PrintError => 0 });
    my $c = $t->make_channel($acc, 'locked');
    ok(!$ro->do('SELECT 1 FROM corelog.channels WHERE id = ?
                 FOR KEY SHARE', undef, $c), 'SELECT FOR KEY SHARE fails');
    is($ro->state, '42501', 'with 42501');
    ok(!$ro->do('SELECT * FROM corelog.key_share_channels(ARRAY[?::uuid])',
                undef, $c), 'the function: not for everyone');
    $dbh->do('GRANT EXECUTE ON FUNCTION corelog.key_share_channels(uuid[])
              TO t062_ro');
    is($ro->selectrow_array(
           'SELECT id FROM corelog.key_share_channels(ARRAY[?::uuid])',
           undef, $c), $c, 'granted: it locks and returns the row');
    $ro->disconnect;
};

subtest 'an upgrade grants the functions to the roles that write logs' => sub {
    $dbh->do('CREATE DATABASE up');
    $t->migrate('up', 3);
    my $up = DBI->connect($t->_dsn('up'), 'postgres', '',
                          { AutoCommit => 1, RaiseError => 1,
                            PrintError => 0 });
    $up->do('CREATE ROLE t062_writer');
    $up->do('CREATE ROLE t062_reader');
    $up->do('GRANT INSERT ON corelog.channel_logs TO t062_writer');
    $up->do('GRANT SELECT ON corelog.channels TO t062_reader');
    $t->migrate('up');
    for my $f (qw(channels traffic_sources log_streams)) {
        my $fn = "corelog.key_share_$f(uuid[])";
        is_deeply($up->selectrow_arrayref(q{
            SELECT has_function_privilege('t062_writer', ?, 'EXECUTE'),
                   has_function_privilege('t062_reader', ?, 'EXECUTE')},
            undef, $fn, $fn), [1, 0], "$f: the writer, not the reader");
    }
    $up->disconnect;
};

$t->done;
done_testing;
