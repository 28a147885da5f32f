#!/usr/bin/perl

# A bad row costs only its own request.  Rows of many tenants share one
# statement (group commit); a trigger refuses one of them: that request
# alone gets the error, every other one its 201/202, and each row is
# stored exactly once.  A serialization failure or a deadlock (the
# statement was rolled back) is tried once more: a row that passes then is
# stored once and answered 201/202, one that fails again 503.  Requests
# whose clients leave while their rows wait to go again leave the queue.
# Claims and logtanks are inserted in key order, not in the order the
# requests came: a session that inserts the same keys in key order cannot
# deadlock with a batch.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $BATCH = 50;

my ($t, $dbh, @tenants);

# The trigger on each log table reads one text column of the new row:
#   "wait:..."                      waits for the test's advisory lock 4711;
#   "raise:<seq>:<code>:<k>:<w>:…"  raises <code> on its first <k> attempts
#                                   (counted by nextval(<seq>), which no
#                                   rollback undoes); from attempt <w> on
#                                   (never if empty), waits for lock 4712
#                                   first.

my $REFUSED = 'test trigger refuses the row';

(my $TRIGGER = <<'EOF') =~ s/%%REFUSED%%/$REFUSED/;
CREATE FUNCTION public.test_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text := to_jsonb(NEW) ->> TG_ARGV[0];
    n bigint;
BEGIN
    IF v LIKE 'wait:%' THEN
        PERFORM pg_advisory_xact_lock_shared(4711);
    END IF;
    IF v LIKE 'raise:%' THEN
        n := nextval(split_part(v, ':', 2)::regclass);
        IF split_part(v, ':', 5) <> ''
           AND n >= split_part(v, ':', 5)::bigint
        THEN
            PERFORM pg_advisory_xact_lock_shared(4712);
        END IF;
        IF n <= split_part(v, ':', 4)::bigint THEN
            RAISE EXCEPTION '%%REFUSED%%'
                  USING ERRCODE = split_part(v, ':', 3);
        END IF;
    END IF;
    RETURN NEW;
END
$$;
EOF

# An nginx with one connection: the rows queued behind a held statement go
# out together; the token cache outlives the test, so no look-up takes the
# connection.  Its database has the triggers and three tenants, each with
# its token, traffic source, channel and log stream.
sub start {
    my ($timeout, $more) = @_;
    $more //= '';

    $t = Corelog::Test->new;
    $t->write_conf(<<"EOF" . Corelog::Test::routes_server(status => 1));
    corelog_connections 1;
    corelog_batch_max $BATCH;
    corelog_query_timeout $timeout;
    corelog_token_cache 1024 600s;
    $more
EOF
    $t->run;

    $dbh = $t->dbh;
    $dbh->do($TRIGGER);

    for my $tr (['core_logs', 'traffic_user_id'],
                ['channel_logs', 'reference'], ['logtanks', 'resource_id'])
    {
        my ($table, $col) = @$tr;
        $dbh->do(<<"EOF");
CREATE TRIGGER test_row BEFORE INSERT ON corelog.$table
    FOR EACH ROW EXECUTE FUNCTION public.test_row('$col')
EOF
    }

    @tenants = map {
        my $acc = $t->make_account("tenant-$_");
        my $s = $t->seed_corelog($acc);
        my $g = $t->make_log_group($acc, 'proj-a');
        { account => $acc,
          token => $t->make_token($acc, domain => 'dom-1',
                                  project => 'proj-a'),
          ts => $s->{traffic_source_id}, cp => $s->{core_pathname_id},
          channel => $t->make_channel($acc),
          group => $g, stream => $t->make_log_stream($g) };
    } 1 .. 3;
}

my $n = 0;
my $seqs = 0;

# a sequence that counts a marker's attempts
sub counter {
    my $name = 'public.attempts_' . ++$seqs;
    $dbh->do("CREATE SEQUENCE $name");
    return $name;
}

sub attempts {
    my ($seq) = @_;
    return scalar $dbh->selectrow_array(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM $seq");
}

# route => sub (tenant, marker): { req, stored (rows of it), ok, key }

my %route = (
    core_log => sub {
        my ($tn, $mark) = @_;
        $mark //= 'ok:' . ++$n;
        my ($rq, $rs) = $t->make_request_response($tn->{ts});
        my $b = { status => 200, method => 'GET', elapsedTime => 1,
                  corePathnameId => $tn->{cp}, requestId => $rq,
                  responseId => $rs, trafficUserId => $mark };
        return { ok => 201, body => $b, mark => $mark,
                 req => [POST => "/core-log/$tn->{ts}",
                         headers => { Authorization => "Bearer $tn->{token}",
                                      'Content-Type' => 'application/json' },
                         body => encode_json($b), timeout => 90],
                 stored => sub {
                     return scalar $dbh->selectrow_array(
                         'SELECT (SELECT count(*) FROM corelog.core_logs
                                   WHERE request_id = $1
                                     AND traffic_user_id = $2)
                               + (SELECT count(*) FROM corelog.core_log_claims
                                   WHERE request_id = $1)',
                         undef, $rq, $mark) / 2;
                 } };
    },

    channel_log => sub {
        my ($tn, $mark) = @_;
        $mark //= 'ok:' . ++$n;
        my $b = { channel_id => $tn->{channel}, label => 'a log',
                  reference => $mark };
        return { ok => 202, body => $b, mark => $mark,
                 req => [POST => '/api/v1/log/create',
                         headers => { Authorization => "Bearer $tn->{token}",
                                      'Content-Type' => 'application/json' },
                         body => encode_json($b), timeout => 90],
                 stored => sub {
                     return scalar $dbh->selectrow_array(
                         'SELECT count(*) FROM corelog.channel_logs
                           WHERE reference = $1 AND channel_id = $2',
                         undef, $mark, $tn->{channel});
                 } };
    },

    logtank => sub {
        my ($tn, $mark) = @_;
        $mark //= 'ok:' . ++$n;
        my $b = { logtank => { resource_type => 'LISTENER',
                               resource_id => $mark,
                               log_group_id => $tn->{group},
                               log_stream_id => $tn->{stream} } };
        return { ok => 201, body => $b, mark => $mark,
                 req => [POST => '/v1/logtanks',
                         headers => { 'X-Auth-Token' => $tn->{token},
                                      'Content-Type' => 'application/json' },
                         body => encode_json($b), timeout => 90],
                 stored => sub {
                     return scalar $dbh->selectrow_array(
                         'SELECT count(*) FROM corelog.logtanks
                           WHERE resource_id = $1 AND account_id = $2',
                         undef, $mark, $tn->{account});
                 } };
    },
);

my %stmt = (core_log => 'core_log_insert',
            channel_log => 'channel_log_insert',
            logtank => 'logtank_insert');

# the error as the route shapes it: [name or error_code, message]
sub error_of {
    my ($route, $r) = @_;
    my $j = $r->{json} // {};
    return $route eq 'logtank' ? [$j->{error_code}, $j->{error_msg}]
                               : [$j->{name}, $j->{message}];
}

sub expect_error {
    my ($route, $status) = @_;
    my %msg = (500 => ['InternalServerError', 'Internal server error'],
               503 => ['ServiceUnavailable',
                       'The database is unavailable, retry later']);
    return [sprintf('CLG.0%03d', $status), $msg{$status}[1]]
        if $route eq 'logtank';
    return $msg{$status};
}

# requests nginx is working on, by stub_status ("Writing", this one too)
sub wait_for_writing {
    my ($want) = @_;
    my $w;
    for (1 .. 400 * $t->timeout_factor) {
        ($w) = ($t->http(GET => '/status')->{body} // '')
               =~ /Writing: (\d+)/;
        return 1 if ($w // -1) == $want;
        sleep 0.05;
    }
    diag "stub_status: Writing " . ($w // 'unknown') . ", want $want";
    return 0;
}

# a session holding an advisory lock, for "wait:" rows (4711) and the
# second attempts of "raise:...:w:" rows (4712)
sub hold {
    my ($key) = @_;
    my $lock = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                            { AutoCommit => 1, RaiseError => 1,
                              PrintError => 0 });
    $lock->do('SELECT pg_advisory_lock(?)', undef, $key);
    return $lock;
}

# The held statement: a "wait:" row of $route keeps the only connection
# busy while @$reqs come, one after the other, and queue in that order
# (they go out together after it).  Returns the sockets, the held one's
# first, and the lock that holds it.
sub start_batch {
    my ($route, $reqs) = @_;

    my $lock = hold(4711);
    my $held = $route{$route}->($tenants[0], 'wait:' . ++$n);
    my @socks = ($t->http_start(@{ $held->{req} }));
    ok($t->wait_lock_waiters, 'the held statement waits');

    my $writing = 2;
    for my $q (@$reqs) {
        push @socks, $t->http_start(@{ $q->{req} });
        $writing++;

        # a few: one after the other, surely queued in this order
        next if @$reqs > 2;
        wait_for_writing($writing);
        sleep 0.3 * $t->timeout_factor;
    }
    ok(wait_for_writing($writing), 'the batch is in nginx');
    # from the auth phase into the write queue (nginx cannot be asked)
    sleep 0.5 * $t->timeout_factor;

    return { lock => $lock, held => $held, socks => \@socks };
}

# the held statement goes, and the batch after it
sub release {
    my ($b) = @_;
    $b->{lock}->disconnect;

    my $held = $b->{held};
    is($t->http_finish(shift @{ $b->{socks} }, timeout => 90)->{status},
       $held->{ok}, "the held one: $held->{ok}");
    is($held->{stored}->(), 1, 'the held one is stored');
}

# the answers of the batch, in its order
sub batch {
    my ($route, $reqs) = @_;
    my $b = start_batch($route, $reqs);
    release($b);
    return [map { $t->http_finish($_, timeout => 90) } @{ $b->{socks} }];
}

# rows of every tenant, in turns
sub rows {
    my ($route, $count, %mark) = @_;
    return [map { $route{$route}->($tenants[$_ % 3], $mark{$_}) }
                0 .. $count - 1];
}

# warm the token caches: then no auth subrequest needs a query
sub warm_up {
    for my $tn (@tenants) {
        for my $route (sort keys %route) {
            my $w = $route{$route}->($tn);
            is($t->http(@{ $w->{req} })->{status}, $w->{ok},
               "warm-up $route: $w->{ok}");
        }
    }
}

start('60s');
warm_up();

###########################################################################
# one bad row in a batch of many tenants' rows

for my $route (qw(core_log channel_log logtank)) {
    subtest "$route: one bad row among 30 costs only its own request" => sub {
        my $BAD = 17;
        my $seq = counter();
        my $reqs = rows($route, 30, $BAD => "raise:$seq:P0001:99::" . ++$n);

        sleep 1.1;    # the log lines below are limited to one a second
        my $off = length $t->error_log;

        my $res = batch($route, $reqs);

        my @want = map { $_ == $BAD ? 500 : $reqs->[$_]{ok} } 0 .. $#$reqs;
        is_deeply([map { $_->{status} } @$res], \@want,
                  "the bad row: 500; each of the 29 others: $reqs->[0]{ok}");
        is_deeply(error_of($route, $res->[$BAD]), expect_error($route, 500),
                  'the bad row: its JSON error');
        is_deeply([map { $_->{stored}->() } @$reqs],
                  [map { $_ == $BAD ? 0 : 1 } 0 .. $#$reqs],
                  'the bad row is not stored, each other row once');
        is(attempts($seq), 2, 'the bad row was tried twice: in the batch, '
                              . 'then alone');

        # each answer is its own row's
        my $key = $route eq 'core_log' ? 'trafficUserId'
                : $route eq 'logtank' ? 'resource_id' : undef;
        if ($key) {
            my @wrong = grep {
                $_ != $BAD
                && (($route eq 'logtank' ? $res->[$_]{json}{logtank}
                                         : $res->[$_]{json}) // {})->{$key}
                   ne $reqs->[$_]{mark}
            } 0 .. $#$reqs;
            is_deeply(\@wrong, [], 'each answer names its own row');
        }

        my $log = substr $t->error_log, $off;
        like($log, qr/corelog: statement failed with SQLSTATE P0001: \Q$REFUSED\E/,
             'the error log names the SQLSTATE');
        like($log, qr/corelog: statement "$stmt{$route}" failed with SQLSTATE P0001, sending 30 of its rows again one by one/,
             'the 30 rows of the failed statement went again one by one');
    };
}

###########################################################################
# serialization failures and deadlocks: once more

subtest 'core_log: 40001 once in a batch: the batch goes once more' => sub {
    my $seq = counter();
    my $reqs = rows('core_log', 12, 5 => "raise:$seq:40001:1::" . ++$n);

    sleep 1.1;
    my $off = length $t->error_log;

    my $res = batch('core_log', $reqs);

    is_deeply([map { $_->{status} } @$res], [(201) x 12], 'all 201');
    is_deeply([map { $_->{stored}->() } @$reqs], [(1) x 12],
              'each row stored once');
    is(attempts($seq), 2, 'the row was tried twice');
    like(substr($t->error_log, $off),
         qr/corelog: statement "core_log_insert" failed with SQLSTATE 40001, sending 12 of its rows again once more/,
         'the error log says the batch went once more');
};

for my $case (['core_log', '40001'], ['channel_log', '40P01'],
              ['logtank', '40001'])
{
    my ($route, $state) = @$case;

    subtest "$route: $state once, alone: once more, then stored" => sub {
        my $seq = counter();
        my $q = $route{$route}->($tenants[1], "raise:$seq:$state:1::" . ++$n);
        my $r = $t->http(@{ $q->{req} });
        is($r->{status}, $q->{ok}, "status $q->{ok}");
        is($q->{stored}->(), 1, 'stored once');
        is(attempts($seq), 2, 'tried twice');
    };

    subtest "$route: $state every time: 503 after one more try" => sub {
        my $seq = counter();
        my $q = $route{$route}->($tenants[2],
                                 "raise:$seq:$state:99::" . ++$n);
        my $r = $t->http(@{ $q->{req} });
        is($r->{status}, 503, "status 503");
        is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
        is_deeply(error_of($route, $r), expect_error($route, 503),
                  'JSON error');
        is($q->{stored}->(), 0, 'nothing stored');
        is(attempts($seq), 2, 'tried twice, no more');
    };
}

subtest 'channel_log: 40P01 every time in a batch: each 503, tried twice' => sub {
    my $seq = counter();
    my $reqs = rows('channel_log', 8, 3 => "raise:$seq:40P01:99::" . ++$n);
    my $res = batch('channel_log', $reqs);

    is_deeply([map { $_->{status} } @$res], [(503) x 8], 'all 503');
    is_deeply([map { $_->{stored}->() } @$reqs], [(0) x 8], 'none stored');
    is(attempts($seq), 2, 'the batch went twice, no more');
};

###########################################################################
# clients that leave while their rows wait to go again alone

subtest 'channel_log: clients leave while their rows wait to go alone' => sub {
    my $seq = counter();

    # the bad row is the third: alone (its second attempt) it waits for
    # lock 4712, and the rows after it wait in the queue to go alone
    my $reqs = rows('channel_log', 10, 2 => "raise:$seq:P0001:99:2:" . ++$n);
    my %gone = map { $_ => 1 } 4, 6, 8;
    my $closed = () = $t->access_log =~ m{ 499 }g;

    my $lock = hold(4712);
    my $bt = start_batch('channel_log', $reqs);
    release($bt);

    # the batch failed; rows 0 and 1 went alone; the bad row waits
    ok($t->wait_lock_waiters, 'the bad row, alone, waits');
    is(attempts($seq), 2, 'the bad row is on its second attempt');

    close $bt->{socks}[$_] for sort keys %gone;
    my $left = 0;
    for (1 .. 200 * $t->timeout_factor) {
        $left = () = $t->access_log =~ m{ 499 }g;
        last if $left - $closed >= 3;
        sleep 0.05;
    }
    is($left - $closed, 3, 'the three requests ended (499)');

    $lock->disconnect;

    my %want;
    for my $i (0 .. $#$reqs) {
        next if $gone{$i};
        my $r = $t->http_finish($bt->{socks}[$i], timeout => 90);
        $want{$i} = [$r->{status}, $i == 2 ? 500 : 202];
    }
    is_deeply([map { $want{$_}[0] } sort { $a <=> $b } keys %want],
              [map { $want{$_}[1] } sort { $a <=> $b } keys %want],
              'the bad row: 500, the others still there: 202');
    is_deeply([map { $_->{stored}->() } @$reqs],
              [map { $_ == 2 || $gone{$_} ? 0 : 1 } 0 .. $#$reqs],
              'the rows of the requests that left are not stored');
    is(attempts($seq), 2, 'the bad row was tried twice');
};

###########################################################################
# claims and logtanks in key order: a batch whose requests came in the
# other order, and a session that inserts the same keys in key order, one
# at a time: the batch waits for the session's first key, and the session
# takes its second one freely.  Inserted in the order the requests came,
# the batch would hold the second key while it waits for the first, and
# the two would deadlock (40P01).

my %key_order = (
    core_log => sub {
        my @p = sort { $a->{body}{requestId} cmp $b->{body}{requestId} }
                map { $route{core_log}->($tenants[0]) } 1 .. 2;
        my $insert = sub {
            my ($x, $q) = @_;
            $x->do('INSERT INTO corelog.core_log_claims
                        (request_id, response_id, core_log_id)
                    VALUES ($1, $2, gen_random_uuid())', undef,
                   @{ $q->{body} }{qw(requestId responseId)});
        };
        return (\@p, $insert);
    },

    logtank => sub {
        my $tn = $tenants[0];
        my $k = ++$n;
        my @p = map { $route{logtank}->($tn, "key-$_-$k") } qw(a b);
        my $insert = sub {
            my ($x, $q) = @_;
            $x->do(q{INSERT INTO corelog.logtanks
                         (id, account_id, domain_id, project_id,
                          resource_type, resource_id, log_group_id,
                          log_stream_id, created_at, updated_at)
                     VALUES (gen_random_uuid(), $1, 'dom-1', 'proj-a',
                             'LISTENER', $2, $3, $4, now(), now())},
                   undef, $tn->{account}, $q->{mark}, $tn->{group},
                   $tn->{stream});
        };
        return (\@p, $insert);
    },
);

for my $route (sort keys %key_order) {
    subtest "$route: rows locked in key order: no deadlock" => sub {
        my ($pair, $insert) = $key_order{$route}->();
        my ($low, $high) = @$pair;

        my $off = length $t->error_log;
        my $pg_off = length $t->pg_log;

        # the batch: high first, then low
        my $bt = start_batch($route, [$high, $low]);

        my $x = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                             { AutoCommit => 0, RaiseError => 1,
                               PrintError => 0 });
        $insert->($x, $low);

        release($bt);
        ok($t->wait_lock_waiters, "the batch waits for the session's key");

        ok(eval { $insert->($x, $high); $x->commit; 1 },
           'the session inserts its second key and commits')
            or diag $@;
        $x->disconnect;

        my @r = map { $t->http_finish($_, timeout => 90) } @{ $bt->{socks} };
        is_deeply([map { $_->{status} } @r], [409, 409],
                  'both rows of the batch: 409 (the session has them)');

        unlike(substr($t->error_log, $off), qr/SQLSTATE 40P01/,
               'no deadlock in the error log');
        unlike(substr($t->pg_log, $pg_off), qr/deadlock detected/,
               "no deadlock in PostgreSQL's log");
    };
}

###########################################################################
# the rows of each route's batch of 30 shared one statement

$t->stop;

my $log = $t->error_log;
for my $route (sort keys %stmt) {
    like($log, qr/corelog: rows per statement "$stmt{$route}":[^\n]* 16-31:[1-9]/,
         "$route: the 30 rows shared one statement");
}

$t->done;

###########################################################################
# The bound of a write's waits: rows whose batch failed after their wait
# bound (half of corelog_query_timeout, counted from when they were
# queued) was spent, waiting and in that statement, go no more: each
# answers 503, none is stored.  A second nginx, with a timeout T of 10 s:
# the batch waits for the held statement 3 s, then its own statement
# waits (for lock 4712, on its bad row) 3.5 s, less than its own bound of
# T/2, and fails 6.5 s after the rows came, past their wait bound of T/2.
# Unnamed statements: the module then sets no statement_timeout in
# PostgreSQL (4/5 of T/2), which would end these waits first.

my $T = 10 * $t->timeout_factor;
start("${T}s", 'corelog_prepared_statements off;');
warm_up();

subtest 'rows whose batch failed past their wait bound: 503' => sub {
    my $seq = counter();
    my $reqs = rows('core_log', 6, 2 => "raise:$seq:P0001:99:1:" . ++$n);

    my $lock = hold(4712);
    my $sent = Time::HiRes::time();
    my $bt = start_batch('core_log', $reqs);

    sleep $_ for grep { $_ > 0 } $sent + 0.3 * $T - Time::HiRes::time();
    release($bt);
    ok($t->wait_lock_waiters, 'the batch waits, on its bad row');

    sleep $_ for grep { $_ > 0 } $sent + 0.65 * $T - Time::HiRes::time();
    $lock->disconnect;

    my @r = map { $t->http_finish($_, timeout => 90) } @{ $bt->{socks} };
    is_deeply([map { $_->{status} } @r], [(503) x 6], 'each 503');
    is_deeply(error_of('core_log', $r[0]), expect_error('core_log', 503),
              'JSON error');
    is_deeply([map { $_->{stored}->() } @$reqs], [(0) x 6], 'none stored');
    is(attempts($seq), 1, 'the bad row went once');
};

$t->done;
done_testing;
