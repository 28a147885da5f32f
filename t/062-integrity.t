#!/usr/bin/perl

# Migration 004: the log tables have no foreign keys, and what the keys
# did still holds.  Deleting a traffic source, pathname, request,
# response, claim, channel, log group, log stream or account deletes the
# logs that refer to it, as ON DELETE CASCADE did (one subtest per former
# foreign key; another account's logs stay).  A change of a referenced key
# (or of the traffic source, group or account a lookup goes through) is
# refused with 23503, a TRUNCATE that would leave logs behind with 0A000,
# and so is, under REPEATABLE READ, a delete whose snapshot could miss a
# log.  With a second session: a delete that comes first makes the write
# wait and answer 404; a write that comes first makes the delete wait, and
# its log is deleted with the rest; a pathname cannot move to another
# traffic source under a write, either way.  No log row refers to a
# missing parent at the end, and log partitions still detach and drop.

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

# the requests of the three routes, for $t->http and $t->http_start; the
# token is $acc's unless given
sub core_req {
    my ($s, $token) = @_;
    return (POST => "/core-log/$s->{traffic_source_id}",
        headers => { Authorization => 'Bearer ' . ($token // $tok),
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $s->{request_id},
                              responseId => $s->{response_id} }));
}

sub channel_req {
    my ($ch, $label, $token) = @_;
    return (POST => '/api/v1/log/create',
        headers => { Authorization => 'Bearer ' . ($token // $tok),
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => $label }));
}

sub logtank_req {
    my ($g, $s, $res, $token) = @_;
    return (POST => '/v1/logtanks',
        headers => { 'X-Auth-Token' => $token // $tok_p,
                     'Content-Type' => 'application/json' },
        body => encode_json({ logtank => { resource_type => 'LISTENER',
                                           resource_id => $res,
                                           log_group_id => $g,
                                           log_stream_id => $s } }));
}

# written($status, request): the write, which must answer $status
sub written {
    my ($want, @req) = @_;
    my $r = $t->http(@req);
    die "a write answered $r->{status}, not $want:\n$r->{raw}\n"
        unless $r->{status} == $want;
}

# try($sql, @bind): undef if it ran, else the SQLSTATE it failed with
sub try {
    my ($sql, @bind) = @_;
    local $dbh->{RaiseError} = 1;
    return eval { $dbh->do($sql, undef, @bind); 1 } ? undef : $dbh->state;
}

# count_of('table WHERE ...', @bind): how many rows of corelog.table
sub count_of {
    my ($from, @bind) = @_;
    return scalar $dbh->selectrow_array(
        "SELECT count(*) FROM corelog.$from", undef, @bind);
}

sub exists_row {
    my ($table, $id) = @_;
    return count_of("$table WHERE id = ?", $id);
}

# A core log written by hand, not by the module: $ts's, with the pathname,
# request and response of $s (another traffic source's), so that only the
# traffic source's own trigger finds it.
sub hand_core_log {
    my ($ts, $s) = @_;
    $dbh->do(q{INSERT INTO corelog.core_logs
                 (id, traffic_source_id, core_pathname_id, request_id,
                  response_id, status, method, level, elapsed_time,
                  created_at)
               VALUES (gen_random_uuid(), ?, ?, ?, ?, 200, 'GET', 'info', 1,
                       now())}, undef,
             $ts, @$s{qw(core_pathname_id request_id response_id)});
}

# A logtank written by hand: $account's, in the group and stream given.
sub hand_logtank {
    my ($account, $g, $st) = @_;
    return scalar $dbh->selectrow_array(q{INSERT INTO corelog.logtanks
            (id, account_id, project_id, resource_type, resource_id,
             log_group_id, log_stream_id, created_at, updated_at)
        VALUES (gen_random_uuid(), ?, 'proj', 'LISTENER',
                gen_random_uuid()::text, ?, ?, now(), now())
        RETURNING id}, undef, $account, $g, $st);
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

# ON DELETE CASCADE.  world(): an account with logs written by the module:
# a traffic source with two pathnames and a core log on each (each with
# its own request, response and claim), two channels with two logs and
# one, two log groups (the first with two streams) and a logtank on each
# of the three streams.  present($w): what is left of them.

sub world {
    my %w = (acc => $t->make_account('world'));
    $w{tok} = $t->make_token($w{acc});
    $w{tok_p} = $t->make_token($w{acc}, domain => 'dom', project => 'proj');

    my $s = $t->seed_corelog($w{acc});
    $w{ts} = $s->{traffic_source_id};
    my ($cp) = $dbh->selectrow_array(q{
        INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
        VALUES (?, '/second') RETURNING id}, undef, $w{ts});
    my %s2 = (%$s, core_pathname_id => $cp);
    @s2{qw(request_id response_id)} = $t->make_request_response($w{ts});
    $w{core} = [$s, \%s2];
    written(201, core_req($_, $w{tok})) for @{$w{core}};

    $w{ch} = [map { $t->make_channel($w{acc}, "ch$_") } 0, 1];
    written(202, channel_req($w{ch}[0], "l$_", $w{tok})) for 1, 2;
    written(202, channel_req($w{ch}[1], 'l3', $w{tok}));

    $w{g} = [map { $t->make_log_group($w{acc}, 'proj', "g$_") } 0, 1];
    $w{st} = [$t->make_log_stream($w{g}[0], 's0'),
              $t->make_log_stream($w{g}[0], 's1'),
              $t->make_log_stream($w{g}[1], 's2')];
    $w{res} = [qw(r0 r1 r2)];
    written(201, logtank_req($w{g}[$_ == 2 ? 1 : 0], $w{st}[$_],
                             $w{res}[$_], $w{tok_p}))
        for 0 .. 2;
    return \%w;
}

sub present {
    my ($w) = @_;
    return {
        core_logs => [map { count_of('core_logs WHERE request_id = ?',
                                     $_->{request_id}) } @{$w->{core}}],
        claims => [map { count_of('core_log_claims WHERE request_id = ?',
                                  $_->{request_id}) } @{$w->{core}}],
        channel_logs => [map { count_of('channel_logs WHERE channel_id = ?',
                                        $_) } @{$w->{ch}}],
        logtanks => [map { count_of('logtanks WHERE account_id = ?
                                      AND resource_id = ?', $w->{acc}, $_) }
                     @{$w->{res}}],
    };
}

my %whole = (core_logs => [1, 1], claims => [1, 1], channel_logs => [2, 1],
             logtanks => [1, 1, 1]);

sub deleted {
    my ($table, $id) = @_;
    is(try("DELETE FROM corelog.$table WHERE id = ?", $id), undef,
       "DELETE from $table: done");
    is(exists_row($table, $id), 0, 'the row is gone');
}

# [the former foreign keys, the delete (given the world), what is left]
my @cascades = (
    ['core_logs.traffic_source_id: a traffic source', sub {
        my ($w) = @_;
        my $z = $t->seed_corelog($w->{acc});
        hand_core_log($w->{ts}, $z);
        deleted(traffic_sources => $w->{ts});
        is(count_of('core_logs WHERE traffic_source_id = ?', $w->{ts}), 0,
           'all its core logs, one written by hand with the pathname,'
           . ' request and response of another source too');
        is(count_of("$_ WHERE traffic_source_id = ?", $w->{ts}), 0,
           "its $_ (their foreign key)")
            for qw(core_pathnames requests responses);
        is(exists_row(core_pathnames => $z->{core_pathname_id}), 1,
           "the other source's pathname stays");
     }, { core_logs => [0, 0], claims => [0, 0] }],

    ['core_logs.core_pathname_id: a pathname', sub {
        my ($w) = @_;
        deleted(core_pathnames => $w->{core}[0]{core_pathname_id});
        is(exists_row(requests => $w->{core}[0]{request_id}), 1,
           'the request of its core log stays');
     }, { core_logs => [0, 1] }],

    # a request, then a response: the same with the other one
    (map {
        my ($k, $other) = @$_;
        (["core_logs.${k}_id, core_log_claims.${k}_id: a $k", sub {
            my ($w) = @_;
            deleted("${k}s" => $w->{core}[0]{"${k}_id"});
            is(exists_row("${other}s" => $w->{core}[0]{"${other}_id"}), 1,
               "the $other of its core log stays");
          }, { core_logs => [0, 1], claims => [0, 1] }],

         ["core_log_claims.${k}_id: a $k whose core log is gone", sub {
            my ($w) = @_;
            $dbh->do("DELETE FROM corelog.core_logs WHERE ${k}_id = ?",
                     undef, $w->{core}[0]{"${k}_id"});
            deleted("${k}s" => $w->{core}[0]{"${k}_id"});
          }, { core_logs => [0, 1], claims => [0, 1] }]);
     } [qw(request response)], [qw(response request)]),

    ['(the claim of a core log): a claim', sub {
        my ($w) = @_;
        is(try('DELETE FROM corelog.core_log_claims WHERE request_id = ?',
               $w->{core}[0]{request_id}), undef, 'DELETE: done');
        is(exists_row(requests => $w->{core}[0]{request_id})
           + exists_row(responses => $w->{core}[0]{response_id}), 2,
           'its request and response stay');
     }, { core_logs => [0, 1], claims => [0, 1] }],

    ['channel_logs.channel_id: a channel', sub {
        my ($w) = @_;
        deleted(channels => $w->{ch}[0]);
     }, { channel_logs => [0, 1] }],

    ['logtanks.log_group_id: a log group', sub {
        my ($w) = @_;
        my $lt = hand_logtank($w->{acc}, $w->{g}[0], $w->{st}[2]);
        deleted(log_groups => $w->{g}[0]);
        is(exists_row(log_streams => $w->{st}[0])
           + exists_row(log_streams => $w->{st}[1]), 0,
           'its streams (their foreign key)');
        is(exists_row(logtanks => $lt), 0, 'a logtank written by hand in'
           . ' it with the stream of another group too');
     }, { logtanks => [0, 0, 1] }],

    ['logtanks.log_stream_id: a log stream', sub {
        my ($w) = @_;
        deleted(log_streams => $w->{st}[0]);
     }, { logtanks => [0, 1, 1] }],

    ['logtanks.account_id: an account (and all it has)', sub {
        my ($w) = @_;
        my $z = $t->make_account('elsewhere');
        my $zg = $t->make_log_group($z, 'proj');
        my $lt = hand_logtank($w->{acc}, $zg, $t->make_log_stream($zg));
        deleted(accounts => $w->{acc});
        is(exists_row(logtanks => $lt), 0,
           'a logtank written by hand in a group of another account too');
        is(exists_row(log_groups => $zg), 1, 'that group stays');
     }, { core_logs => [0, 0], claims => [0, 0], channel_logs => [0, 0],
          logtanks => [0, 0, 0] }],
);

my $other = world();

for my $c (@cascades) {
    my ($name, $delete, $left) = @$c;
    subtest "cascade, $name" => sub {
        my $w = world();
        is_deeply(present($w), \%whole, 'before: all the logs');
        $delete->($w);
        is_deeply(present($w), { %whole, %$left },
                  'after: its logs gone, the others there')
            or diag explain present($w);
        is_deeply(present($other), \%whole, "another account's: all there");
    };
}

subtest 'a delete of many rows at once' => sub {
    my $w = world();
    is(try('DELETE FROM corelog.requests WHERE traffic_source_id = ?',
           $w->{ts}), undef, 'the requests of a traffic source: deleted');
    is_deeply(present($w), { %whole, core_logs => [0, 0], claims => [0, 0] },
              'their claims and core logs with them');
    is(try('DELETE FROM corelog.channels WHERE account_id = ?', $w->{acc}),
       undef, 'the channels of an account: deleted');
    is_deeply(present($w)->{channel_logs}, [0, 0], 'their logs with them');
};

# referenced parents, with a log written by the module: their keys stay

my $s = $t->seed_corelog($acc);
is($t->http(core_req($s))->{status}, 201, 'a core log: 201');
my $ch = $t->make_channel($acc, 'used');
is($t->http(channel_req($ch, 'x'))->{status}, 202, 'a channel log: 202');
my $g = $t->make_log_group($acc, 'proj', 'used');
my $st = $t->make_log_stream($g, 'used');
is($t->http(logtank_req($g, $st, 'r1'))->{status}, 201, 'a logtank: 201');

# [table, id, the log table the refusal names (undef: a foreign key of
# another table refers to it too, and refuses first)]
my @referenced = (
    [traffic_sources => $s->{traffic_source_id}, undef],
    [core_pathnames  => $s->{core_pathname_id},  'core_logs'],
    [requests        => $s->{request_id},        'core_log_claims'],
    [responses       => $s->{response_id},       'core_log_claims'],
    [channels        => $ch,                     'channel_logs'],
    [log_groups      => $g,                      undef],
    [log_streams     => $st,                     'logtanks'],
    [accounts        => $acc,                    undef],
);

for my $p (@referenced) {
    my ($table, $id, $child) = @$p;
    subtest "a referenced row of $table" => sub {
        is(try("UPDATE corelog.$table SET id = gen_random_uuid()
                 WHERE id = ?", $id), '23503', 'UPDATE of its id: 23503');
        like($dbh->errstr, qr/\Q"$child"\E/, "the message names $child")
            if defined $child;
        is(try("UPDATE corelog.$table SET created_at = now() WHERE id = ?",
               $id), undef, 'UPDATE of another column: fine');
        is(try("TRUNCATE corelog.$table CASCADE"), '0A000',
           'TRUNCATE ... CASCADE: refused');
        is(exists_row($table, $id), 1, 'the row stays');
    };
}

subtest 'a key only a log written by hand refers to cannot change' => sub {
    my $z = $t->seed_corelog($acc);
    my ($ts) = $dbh->selectrow_array(q{
        INSERT INTO corelog.traffic_sources (account_id, name)
        VALUES (?, 'bare') RETURNING id}, undef, $acc);
    hand_core_log($ts, $z);
    is(try('UPDATE corelog.traffic_sources SET id = gen_random_uuid()
             WHERE id = ?', $ts), '23503', 'a traffic source: 23503');
    like($dbh->errstr, qr/"core_logs"/, 'naming core_logs');

    my $a2 = $t->make_account('bare');
    hand_logtank($a2, $g, $st);
    is(try('UPDATE corelog.accounts SET id = gen_random_uuid()
             WHERE id = ?', $a2), '23503', 'an account: 23503');
    like($dbh->errstr, qr/"logtanks"/, 'naming logtanks');

    my $g2 = $t->make_log_group($acc, 'proj', 'bare');
    hand_logtank($acc, $g2, $st);
    is(try('UPDATE corelog.log_groups SET id = gen_random_uuid()
             WHERE id = ?', $g2), '23503', 'a log group: 23503');
    like($dbh->errstr, qr/"logtanks"/, 'naming logtanks');

    deleted(traffic_sources => $ts);
    is(count_of('core_logs WHERE traffic_source_id = ?', $ts), 0,
       'its log with it');
    deleted(accounts => $a2);
    deleted(log_groups => $g2);
    is(count_of('logtanks WHERE account_id = ? OR log_group_id = ?',
                $a2, $g2), 0, 'their logtanks with them');
};

subtest 'the scope of a referenced pathname, stream or group stays' => sub {
    my $other_ts = $dbh->selectrow_array(q{
        INSERT INTO corelog.traffic_sources (account_id, name)
        VALUES (?, 'other') RETURNING id}, undef, $acc);
    is(try('UPDATE corelog.core_pathnames SET traffic_source_id = ?
             WHERE id = ?', $other_ts, $s->{core_pathname_id}), '23503',
       'the traffic source of a referenced pathname: 23503');
    my $g2 = $t->make_log_group($acc, 'proj', 'other');
    is(try('UPDATE corelog.log_streams SET log_group_id = ? WHERE id = ?',
           $g2, $st), '23503', 'the group of a referenced stream: 23503');
    my $a2 = $t->make_account('other');
    is(try('UPDATE corelog.log_groups SET account_id = ? WHERE id = ?',
           $a2, $g), '23503', 'the account of a referenced group: 23503');
    my ($free_cp) = $dbh->selectrow_array(q{
        INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
        VALUES (?, '/free') RETURNING id}, undef, $s->{traffic_source_id});
    is(try('UPDATE corelog.core_pathnames SET traffic_source_id = ?
             WHERE id = ?', $other_ts, $free_cp), undef,
       'of a pathname without logs: fine');
};

subtest 'the claim of a core log keeps its keys while the core log is' => sub {
    my ($rq2) = $t->make_request_response($s->{traffic_source_id});
    is(try('UPDATE corelog.core_log_claims SET request_id = ?
             WHERE request_id = ?', $rq2, $s->{request_id}), '23503',
       'UPDATE of its request: 23503');
    like($dbh->errstr, qr/"core_logs"/, 'the message names core_logs');
    is(try('TRUNCATE corelog.core_log_claims'), '0A000',
       'TRUNCATE without core_logs: refused');
    is(count_of('core_log_claims WHERE request_id = ?', $s->{request_id}),
       1, 'the claim stays');
};

subtest 'TRUNCATE with the log tables in the same statement' => sub {
    for my $sql ('TRUNCATE corelog.channels, corelog.channel_logs',
                 'TRUNCATE corelog.core_log_claims, corelog.core_logs',
                 'TRUNCATE corelog.accounts, corelog.core_logs,'
                 . ' corelog.core_log_claims, corelog.channel_logs,'
                 . ' corelog.logtanks CASCADE') {
        $dbh->begin_work;
        is(try($sql), undef, "$sql: done");
        my @tables = $sql =~ /corelog\.(\w+)/g;
        is_deeply([map { count_of($_) } @tables], [map { 0 } @tables],
                  'every table named is empty');
        $dbh->rollback;
    }
    is(exists_row(channels => $ch), 1, '(rolled back)');
};

subtest 'under REPEATABLE READ: refused (0A000) unless the log table'
        . ' is empty on disk' => sub {
    my $free = $t->make_channel($acc, 'free');
    my $delete = 'DELETE FROM corelog.channels WHERE id = ?';
    for my $c (['REPEATABLE READ', $delete], ['SERIALIZABLE', $delete],
               ['REPEATABLE READ', 'UPDATE corelog.channels SET id ='
                                   . ' gen_random_uuid() WHERE id = ?'],
               ['REPEATABLE READ', 'TRUNCATE corelog.channels CASCADE']) {
        my ($level, $sql) = @$c;
        $dbh->begin_work;
        $dbh->do("SET TRANSACTION ISOLATION LEVEL $level");
        is(try($sql, $sql =~ /\?/ ? $free : ()), '0A000',
           "$level: $sql: 0A000");
        $dbh->rollback;
    }
    is(exists_row('channels', $free), 1, 'the channel stays');

    $dbh->begin_work;
    $dbh->do('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    is(try('TRUNCATE corelog.channels, corelog.channel_logs'), undef,
       'TRUNCATE with its log table: done');
    $dbh->rollback;

    $dbh->do('CREATE DATABASE rr');
    $t->migrate('rr');
    my $rr = DBI->connect($t->_dsn('rr'), 'postgres', '',
                          { AutoCommit => 1, RaiseError => 1,
                            PrintError => 0 });
    my $del = sub {
        my ($c) = @_;
        $rr->begin_work;
        $rr->do('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        my $ok = eval {
            $rr->do('DELETE FROM corelog.channels WHERE id = ?', undef, $c);
            1;
        };
        my $state = $ok ? undef : $rr->state;
        $ok ? $rr->commit : $rr->rollback;
        return $state;
    };
    my ($a) = $rr->selectrow_array(q{INSERT INTO corelog.accounts (name)
                                     VALUES ('rr') RETURNING id});
    my $new_channel = sub {
        return scalar $rr->selectrow_array(q{
            INSERT INTO corelog.channels (account_id, name)
            VALUES (?, 'rr') RETURNING id}, undef, $a);
    };
    is($del->($new_channel->()), undef,
       'a database whose channel_logs was never written: the delete runs');
    my $c = $new_channel->();
    $rr->do(q{INSERT INTO corelog.channel_logs (id, channel_id, label, type,
                                               created_at)
              VALUES (gen_random_uuid(), ?, 'l', 'action', now())},
            undef, $c);
    $rr->do('DELETE FROM corelog.channel_logs');
    is($del->($new_channel->()), '0A000',
       'once written (rows deleted, pages left): 0A000');
    $rr->disconnect;
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
    is($t->http(core_req($s2))->{status}, 404, 'a deleted request: 404');
};

# the races, with a second session

sub session {
    return DBI->connect($t->_dsn('corelog'), 'postgres', '',
                        { AutoCommit => 1, RaiseError => 1,
                          PrintError => 0 });
}

sub logs_of {
    my ($c) = @_;
    return count_of('channel_logs WHERE channel_id = ?', $c);
}

# hold($table): until release(), a write into corelog.$table waits once it
# has locked its parents (a row trigger waits for an advisory lock that a
# session of the test holds); unhold() drops the trigger
sub hold {
    my ($table) = @_;
    my $h = session();
    $h->do('SELECT pg_advisory_lock(6200)');
    $dbh->do(q{
        CREATE FUNCTION corelog.t062_hold() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(6200);
            RETURN NEW;
        END $$});
    $dbh->do(qq{CREATE TRIGGER t062_hold BEFORE INSERT ON corelog.$table
                FOR EACH ROW EXECUTE FUNCTION corelog.t062_hold()});
    return { session => $h, table => $table };
}

sub release { $_[0]{session}->do('SELECT pg_advisory_unlock(6200)') }

sub unhold {
    my ($hold) = @_;
    $dbh->do("DROP TRIGGER t062_hold ON corelog.$hold->{table}");
    $dbh->do('DROP FUNCTION corelog.t062_hold()');
    $hold->{session}->disconnect;
}

# start($sql, @bind): $sql in a session of its own, not waited for
sub start {
    my ($sql, @bind) = @_;
    my $d = session();
    # kept: a statement handle destroyed cancels its statement
    $d->{private_t062_sth} = $d->prepare($sql, { pg_async => PG_ASYNC });
    $d->{private_t062_sth}->execute(@bind);
    return $d;
}

# waits($d): whether the statement of session $d waits for a lock now (it
# is given 10 s to)
sub waits {
    my ($d) = @_;
    my $deadline = time + 10 * $t->timeout_factor;
    while (time < $deadline) {
        return 1 if $dbh->selectrow_array(q{
            SELECT count(*) FROM pg_stat_activity
             WHERE pid = ? AND wait_event_type = 'Lock'}, undef,
            $d->{pg_pid});
        return 0 if $d->pg_ready;
        sleep 0.05;
    }
    return 0;
}

# finish($d): the SQLSTATE the statement of session $d failed with, undef
# if it ran; closes the session
sub finish {
    my ($d) = @_;
    my $state = eval { $d->pg_result; 1 } ? undef : $d->state;
    $d->disconnect;
    return $state;
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

subtest 'race: the write first, the delete waits, then deletes its log'
        => sub {
    my $victim = $t->make_channel($acc, 'written first');
    my $hold = hold('channel_logs');
    my $h = $t->http_start(channel_req($victim, 'racing'));
    ok($t->wait_lock_waiters, 'the write holds its channel and waits');

    my $d = start('DELETE FROM corelog.channels WHERE id = ?', $victim);
    ok(waits($d), 'the delete waits for the write');
    release($hold);
    is($t->http_finish($h)->{status}, 202, 'the write: 202, committed');
    is(finish($d), undef, 'then the delete: done');
    is(exists_row(channels => $victim), 0, 'the channel is gone');
    is(logs_of($victim), 0, 'and the log written meanwhile with it');
    unhold($hold);
};

subtest 'race: a core log first, its request\'s delete waits, then deletes'
        . ' its claim and core log' => sub {
    my $s2 = $t->seed_corelog($acc);
    my $hold = hold('core_logs');
    my $h = $t->http_start(core_req($s2));
    ok($t->wait_lock_waiters, 'the write holds its parents and waits');

    my $d = start('DELETE FROM corelog.requests WHERE id = ?',
                  $s2->{request_id});
    ok(waits($d), 'the delete waits for the write');
    release($hold);
    is($t->http_finish($h)->{status}, 201, 'the write: 201, committed');
    is(finish($d), undef, 'then the delete: done');
    is(count_of('core_log_claims WHERE request_id = ?', $s2->{request_id}),
       0, 'its claim is gone');
    is(count_of('core_logs WHERE request_id = ?', $s2->{request_id}), 0,
       'and its core log');
    is(exists_row(responses => $s2->{response_id}), 1, 'its response stays');
    unhold($hold);
};

# A pathname cannot move to another traffic source under a write of its
# core log, nor a stream to another group or a group to another account
# under a write of their logtank: the move waits for the write and fails,
# or the write waits for the move and answers 404.  [what, the log table,
# scope()]; scope(): the write and its answer, the move (SQL and values),
# how many rows show that nothing moved (1 or 0), how many the write
# stored, and how many it writes.
my $n_res = 0;
my @scopes = (
    ['a pathname to another traffic source', 'core_logs', sub {
        my $s2 = $t->seed_corelog($acc);
        my $ts2 = $t->seed_corelog($acc)->{traffic_source_id};
        return ([core_req($s2)], 201,
                ['UPDATE corelog.core_pathnames SET traffic_source_id = ?
                   WHERE id = ?', $ts2, $s2->{core_pathname_id}],
                sub { count_of('core_pathnames WHERE id = ?
                                  AND traffic_source_id = ?',
                               @$s2{qw(core_pathname_id
                                       traffic_source_id)}) },
                sub { count_of('core_logs WHERE request_id = ?',
                               $s2->{request_id})
                      + count_of('core_log_claims WHERE request_id = ?',
                                 $s2->{request_id}) }, 2);
     }],
    ['a log stream to another group', 'logtanks', sub {
        my $g2 = $t->make_log_group($acc, 'proj');
        my $st2 = $t->make_log_stream($g2);
        my $g3 = $t->make_log_group($acc, 'proj');
        return ([logtank_req($g2, $st2, 'scope' . ++$n_res)], 201,
                ['UPDATE corelog.log_streams SET log_group_id = ?
                   WHERE id = ?', $g3, $st2],
                sub { count_of('log_streams WHERE id = ?
                                  AND log_group_id = ?', $st2, $g2) },
                sub { count_of('logtanks WHERE log_stream_id = ?', $st2) },
                1);
     }],
    ['a log group to another account', 'logtanks', sub {
        my $g2 = $t->make_log_group($acc, 'proj');
        my $st2 = $t->make_log_stream($g2);
        my $a2 = $t->make_account('elsewhere');
        return ([logtank_req($g2, $st2, 'scope' . ++$n_res)], 201,
                ['UPDATE corelog.log_groups SET account_id = ?
                   WHERE id = ?', $a2, $g2],
                sub { count_of('log_groups WHERE id = ? AND account_id = ?',
                               $g2, $acc) },
                sub { count_of('logtanks WHERE log_group_id = ?', $g2) },
                1);
     }],
);

for my $c (@scopes) {
    my ($what, $table, $scope) = @$c;

    subtest "race: a log first, $what cannot move under it" => sub {
        my ($req, $status, $move, $stays, $stored, $rows) = $scope->();
        my $hold = hold($table);
        my $h = $t->http_start(@$req);
        ok($t->wait_lock_waiters, 'the write holds its parents and waits');

        my $d = start(@$move);
        ok(waits($d), 'the move waits for the write');
        release($hold);
        is($t->http_finish($h)->{status}, $status, "the write: $status");
        is(finish($d), '23503', 'then the move fails: 23503');
        is($stays->(), 1, 'nothing moved');
        is($stored->(), $rows, 'the log stored');
        unhold($hold);
    };

    subtest "race: $what moved first, the write waits, answers 404"
            => sub {
        my ($req, $status, $move, $stays, $stored) = $scope->();
        my ($sql, @bind) = @$move;
        my $d = session();
        $d->begin_work;
        $d->do($sql, undef, @bind);

        my $h = $t->http_start(@$req);
        ok($t->wait_lock_waiters, 'the write waits for the move');
        $d->commit;
        is($t->http_finish($h)->{status}, 404, 'then answers 404');
        is($stays->(), 0, 'moved');
        is($stored->(), 0, 'nothing stored');
        $d->disconnect;
    };
}

subtest 'race: many writes and deletes at once, no orphan' => sub {
    my @chs = map { $t->make_channel($acc, "c$_") } 1 .. 20;
    my @reqs = map { my $c = $_; map { [channel_req($c, "m$_")] } 1 .. 5 }
               @chs;
    # the deletes, one statement each, run while the writes go in
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $dd = session();
        for my $c (@chs) {
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
    my $in = join ',', map { $dbh->quote($_) } @chs;
    is(count_of("channels WHERE id IN ($in)"), 0, 'every channel deleted');
    is(count_of("channel_logs WHERE channel_id IN ($in)"), 0,
       'and every log of them, those written first too');
    my $orphans = $dbh->selectrow_array(q{
        SELECT count(*) FROM corelog.channel_logs l
         WHERE NOT EXISTS (SELECT 1 FROM corelog.channels c
                            WHERE c.id = l.channel_id)});
    is($orphans, 0, 'no orphan channel log');
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
    is($dbh->selectrow_array(q{
        SELECT count(*) FROM corelog.core_logs l
         WHERE NOT EXISTS (SELECT 1 FROM corelog.core_log_claims c
                            WHERE c.core_log_id = l.id
                              AND c.request_id = l.request_id
                              AND c.response_id = l.response_id)}), 0,
       'every core log has its claim');
    ok(count_of('core_logs') && count_of('channel_logs')
       && count_of('logtanks'), '(and there are logs to look at)');
};

subtest 'log partitions detach and drop; then the parents delete' => sub {
    is(try('ALTER TABLE corelog.channel_logs
              DETACH PARTITION corelog.channel_logs_now'), undef,
       'channel_logs: DETACH');
    is(try('DROP TABLE corelog.channel_logs_now'), undef, 'and DROP');
    is(try('DROP TABLE corelog.core_logs_now'), undef,
       'core_logs: DROP without detaching');
    is(count_of('core_log_claims WHERE request_id = ?', $s->{request_id}),
       1, 'the claims stay');
    deleted(channels => $ch);
    deleted(traffic_sources => $s->{traffic_source_id});
    is(count_of('core_log_claims WHERE request_id = ?', $s->{request_id}),
       0, 'its claims with it');
};

# role($name, @grants): a session of a new role, which has USAGE on the
# schema and each grant (what comes between GRANT and TO)
sub role {
    my ($name, @grants) = @_;
    $dbh->do("CREATE ROLE $name LOGIN");
    $dbh->do("GRANT $_ TO $name") for 'USAGE ON SCHEMA corelog', @grants;
    return DBI->connect($t->_dsn('corelog'), $name, '',
                        { AutoCommit => 1, RaiseError => 0,
                          PrintError => 0 });
}

subtest 'FOR KEY SHARE needs UPDATE; the functions do not' => sub {
    my $ro = role(t062_ro => 'SELECT ON corelog.channels');
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

subtest 'the functions: PL/pgSQL, and no search_path of the caller\'s' => sub {
    # migration 005: PL/pgSQL keeps their plans for the session; without a
    # SET clause nothing in them may depend on the caller's search_path
    is_deeply($dbh->selectall_arrayref(q{
        SELECT p.proname, l.lanname, p.prosecdef, p.proconfig IS NULL
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'corelog'::regnamespace
           AND p.proname LIKE 'key\_share\_%'
         ORDER BY 1}),
        [map { ["key_share_$_", 'plpgsql', 1, 1] }
             qw(channels core_pathnames log_groups log_streams requests
                responses traffic_sources)],
        'seven functions, PL/pgSQL, SECURITY DEFINER, no SET');

    my $c = $t->make_channel($acc, 'hijack');
    my $ev = role(t062_evil => 'CREATE ON DATABASE corelog',
                  'SELECT ON corelog.channels');
    $dbh->do('GRANT EXECUTE ON FUNCTION corelog.key_share_channels(uuid[])
              TO t062_evil');
    ok($ev->do($_), $_) or diag $ev->errstr for
        'CREATE SCHEMA evil',
        'CREATE FUNCTION evil.eq(uuid, uuid) RETURNS boolean
           LANGUAGE sql AS $$ SELECT true $$',
        'CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid,
                                 FUNCTION = evil.eq)',
        'SET search_path = evil, pg_catalog';
    is($ev->selectrow_array('SELECT count(*) FROM corelog.channels
                              WHERE id = ?', undef, $c),
       $dbh->selectrow_array('SELECT count(*) FROM corelog.channels'),
       'the role\'s own = matches every row in its own query');
    is_deeply($ev->selectall_arrayref(
           'SELECT id FROM corelog.key_share_channels(ARRAY[?::uuid])',
           undef, '00000000-0000-4000-8000-00000000dead'), [],
       'the function locks no row for an id that is none');
    is_deeply($ev->selectall_arrayref(
           'SELECT id FROM corelog.key_share_channels(ARRAY[?::uuid])',
           undef, $c), [[$c]], 'and the one row asked for');
    $ev->disconnect;
    $dbh->do('DROP SCHEMA evil CASCADE');
};

subtest 'a logtank\'s resource_type: the rule of migration 003, cheaper' => sub {
    # migration 005 replaced the anchored regular expression: the same
    # values pass and fail, written by hand (the module refuses them first)
    my $g = $t->make_log_group($acc, 'proj', 'rt');
    my $st = $t->make_log_stream($g, 'rt');
    my $try = sub {
        my ($type) = @_;
        $dbh->do('SAVEPOINT rt');
        my $ok = eval {
            $dbh->do(q{INSERT INTO corelog.logtanks
                    (id, account_id, project_id, resource_type, resource_id,
                     log_group_id, log_stream_id, created_at, updated_at)
                VALUES (gen_random_uuid(), ?, 'proj', ?,
                        gen_random_uuid()::text, ?, ?, now(), now())},
                undef, $acc, $type, $g, $st);
            1;
        };
        my $state = $dbh->state;
        $dbh->do($ok ? 'RELEASE SAVEPOINT rt' : 'ROLLBACK TO SAVEPOINT rt');
        return $ok ? 'ok' : $state;
    };
    $dbh->begin_work;
    is($try->($_), 'ok', "'$_' passes")
        for 'a', 'ecs.instance-type_01', 'Z9', 'x' x 64, '-._';
    is($try->($_), '23514', "'$_' is refused (23514)")
        for '', 'x' x 65, 'a b', "a\n", "ab\n", 'é', 'a/b', 'a*',
            "a\x{0}b" =~ s/\x{0}/%/r;
    $dbh->rollback;
};

# the columns of logtanks' unique key, in its order, each with the
# collation of the index on it ('' for none: the uuid)
sub logtank_key {
    return $dbh->selectall_arrayref(q{
        SELECT a.attname, coalesce(c.collname, '')
          FROM pg_index i,
               unnest(i.indkey::int2[], i.indcollation::oid[])
                   WITH ORDINALITY AS k(attnum, coll, n)
               JOIN pg_attribute a
                 ON a.attrelid = 'corelog.logtanks'::regclass
                AND a.attnum = k.attnum
               LEFT JOIN pg_collation c ON c.oid = k.coll
         WHERE i.indrelid = 'corelog.logtanks'::regclass
           AND i.indisunique AND NOT i.indisprimary
         ORDER BY k.n});
}

subtest 'a logtank\'s key compares bytes, and refuses what it refused' => sub {
    # migration 006: the key's text columns and their index are COLLATE
    # "C", whatever the database's default collation
    is_deeply($dbh->selectall_arrayref(q{
        SELECT a.attname, c.collname
          FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
         WHERE a.attrelid = 'corelog.logtanks'::regclass
           AND a.attname IN ('domain_id', 'project_id', 'resource_type',
                             'resource_id')
         ORDER BY a.attnum}),
        [['domain_id', 'default'], ['project_id', 'C'],
         ['resource_type', 'C'], ['resource_id', 'C']],
        'project_id, resource_type, resource_id: "C" (domain_id as was)');
    is_deeply([map { $_->[1] } grep { $_->[1] } @{ logtank_key() }],
              [qw(C C C)], 'and so is the unique key\'s index');

    my $g = $t->make_log_group($acc, 'proj', 'key');
    my $st = $t->make_log_stream($g, 'key');
    my $try = sub {
        my ($project, $type, $id) = @_;
        $dbh->do('SAVEPOINT k');
        my $ok = eval {
            $dbh->do(q{INSERT INTO corelog.logtanks
                    (id, account_id, project_id, resource_type, resource_id,
                     log_group_id, log_stream_id, created_at, updated_at)
                VALUES (gen_random_uuid(), ?, ?, ?, ?, ?, ?, now(), now())},
                undef, $acc, $project, $type, $id, $g, $st);
            1;
        };
        my $state = $dbh->state;
        $dbh->do($ok ? 'RELEASE SAVEPOINT k' : 'ROLLBACK TO SAVEPOINT k');
        return $ok ? 'ok' : $state;
    };
    $dbh->begin_work;
    is($try->('proj', 'ecs', 'i-1'), 'ok', 'a logtank');
    is($try->('proj', 'ecs', 'i-1'), '23505', 'the same key again: 23505');
    is($try->(@$_), 'ok', "(@$_): another key")
        for ['proj', 'ecs', 'I-1'], ['proj', 'ECS', 'i-1'],
            ['Proj', 'ecs', 'i-1'], ['proj', 'ecs', "i-1\x{e9}"];
    is($try->('proj', 'ecs', "i-1\x{e9}"), '23505',
       'a key of more than ASCII, again: 23505');
    $dbh->rollback;
};

subtest 'a logtank\'s key: its resource id right after its account' => sub {
    # migration 007: the same columns, the resource id second, so that a
    # comparison in the index mostly ends there; still led by account_id,
    # which an account's and a log group's deletes look logtanks up by
    is_deeply([map { $_->[0] } @{ logtank_key() }],
              [qw(account_id resource_id resource_type project_id)],
        'unique (account_id, resource_id, resource_type, project_id)');
    my ($n) = $dbh->selectrow_array(q{
        SELECT count(*) FROM pg_index
         WHERE indrelid = 'corelog.logtanks'::regclass AND indisunique});
    is($n, 2, 'and the primary key: no other unique index');
};

subtest 'the cascade runs with its owner\'s rights' => sub {
    my $c = $t->make_channel($acc, 'admin');
    is($t->http(channel_req($c, 'x'))->{status}, 202, 'a channel log');
    my $adm = role(t062_admin => 'SELECT, DELETE ON corelog.channels');
    ok($adm->do('DELETE FROM corelog.channels WHERE id = ?', undef, $c),
       'a role with DELETE on channels only deletes a channel')
        or diag $adm->errstr;
    is(logs_of($c), 0, 'and its logs with it');
    $adm->disconnect;

    # and so not for another role's triggers
    my $o = role(t062_other => 'CREATE ON SCHEMA public');
    $o->do('CREATE TABLE public.t062_mine (id uuid)');
    ok(!$o->do(q{CREATE TRIGGER t062_mine AFTER DELETE ON public.t062_mine
                 REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                 EXECUTE FUNCTION corelog.cascade_delete('channel_logs',
                                                         'channel_id', 'id')}),
       'another role cannot attach the cascade to a table of its own');
    is($o->state, '42501', 'with 42501');
    $o->disconnect;
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
