#!/usr/bin/perl

# Real PostgreSQL errors with SQLSTATEs, raised by triggers that this test
# puts on the log tables for rows that carry a magic value: each SQLSTATE
# class gets its documented answer (503 + Retry-After for serialization
# failures and deadlocks, 503 for a cancelled statement (rolled back), 500 for the rest),
# nothing is stored, and the error log names the SQLSTATE.  An error that
# comes after the rows (a deferred constraint trigger, at COMMIT) is still
# an error, and one failing row fails only its own request of the
# statement it shares with others (t/047-bad-row.t has more).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF' . Corelog::Test::routes_server(status => 1));
    corelog_connections 1;
    corelog_batch_max 50;
    corelog_query_timeout 10s;
EOF
$t->run;

# test_raise(column, prefix): a row whose column is "prefix:SQLSTATE:..."
# raises that SQLSTATE

my $REFUSED = 'test trigger refuses the row';

(my $sql = <<'EOF') =~ s/%%REFUSED%%/$REFUSED/;
CREATE FUNCTION public.test_raise() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text := to_jsonb(NEW) ->> TG_ARGV[0];
BEGIN
    IF v LIKE TG_ARGV[1] || ':%' THEN
        RAISE EXCEPTION '%%REFUSED%%'
              USING ERRCODE = split_part(v, ':', 2);
    END IF;
    RETURN NEW;
END
$$;
EOF
$t->dbh->do($sql);

for my $tr (['core_logs', 'traffic_user_id'], ['channel_logs', 'reference'],
            ['logtanks', 'resource_id'])
{
    my ($table, $col) = @$tr;
    $t->dbh->do(<<"EOF");
CREATE TRIGGER test_raise BEFORE INSERT ON corelog.$table
    FOR EACH ROW EXECUTE FUNCTION public.test_raise('$col', 'raise')
EOF
    # fires at the COMMIT of the statement's transaction, after the rows
    # were sent
    $t->dbh->do(<<"EOF");
CREATE CONSTRAINT TRIGGER test_raise_late AFTER INSERT ON corelog.$table
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION public.test_raise('$col', 'late')
EOF
}

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-a');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $ch = $t->make_channel($acc);
my $g = $t->make_log_group($acc, 'proj-a');
my $st = $t->make_log_stream($g);

my $n = 0;

# each: (request, a sub that says whether its row is stored (0 or 1),
# the success status); a magic value makes the row raise

my %route = (
    core_log => sub {
        my ($magic) = @_;
        my ($rq, $rs) = $t->make_request_response($ts);
        my @req = (POST => "/core-log/$ts",
            headers => { Authorization => "Bearer $tok",
                         'Content-Type' => 'application/json' },
            body => encode_json({ status => 200, method => 'GET',
                                  elapsedTime => 1,
                                  corePathnameId => $s->{core_pathname_id},
                                  requestId => $rq, responseId => $rs,
                                  trafficUserId => $magic }));
        my $stored = sub {
            return scalar $t->dbh->selectrow_array(
                'SELECT greatest((SELECT count(*) FROM corelog.core_logs
                                   WHERE request_id = $1),
                                 (SELECT count(*) FROM corelog.core_log_claims
                                   WHERE request_id = $1))', undef, $rq);
        };
        return (\@req, $stored, 201);
    },

    channel_log => sub {
        my ($magic) = @_;
        $magic //= 'ok:' . ++$n;
        my @req = (POST => '/api/v1/log/create',
            headers => { Authorization => "Bearer $tok",
                         'Content-Type' => 'application/json' },
            body => encode_json({ channel_id => $ch, label => 'a log',
                                  reference => $magic }));
        my $stored = sub {
            return scalar $t->dbh->selectrow_array(
                'SELECT count(*) FROM corelog.channel_logs
                  WHERE reference = $1', undef, $magic);
        };
        return (\@req, $stored, 202);
    },

    logtank => sub {
        my ($magic) = @_;
        $magic //= 'ok:' . ++$n;
        my @req = (POST => '/v1/logtanks',
            headers => { 'X-Auth-Token' => $tok,
                         'Content-Type' => 'application/json' },
            body => encode_json({ logtank => {
                resource_type => 'LISTENER', resource_id => $magic,
                log_group_id => $g, log_stream_id => $st } }));
        my $stored = sub {
            return scalar $t->dbh->selectrow_array(
                'SELECT count(*) FROM corelog.logtanks
                  WHERE resource_id = $1', undef, $magic);
        };
        return (\@req, $stored, 201);
    },
);

# the error as the route shapes it: [name or error_code, message]
sub error_of {
    my ($route, $r) = @_;
    my $j = $r->{json} // {};
    return $route eq 'logtank' ? [$j->{error_code}, $j->{error_msg}]
                               : [$j->{name}, $j->{message}];
}

my %answer = (
    503 => ['ServiceUnavailable', 'The database is unavailable, retry later'],
    504 => ['GatewayTimeout', 'The database did not answer in time'],
    500 => ['InternalServerError', 'Internal server error'],
);

sub expect_error {
    my ($route, $status) = @_;
    return [sprintf('CLG.0%03d', $status), $answer{$status}[1]]
        if $route eq 'logtank';
    return $answer{$status};
}

# warm the token caches: the auth subrequests then need no query
for my $route (sort keys %route) {
    my ($req, $stored, $ok) = $route{$route}->();
    is($t->http(@$req)->{status}, $ok, "warm-up $route: $ok");
}

# [SQLSTATE, what it is, status, Retry-After]

my @cases = (
    ['40001', 'serialization_failure', 503, '1'],
    ['40P01', 'deadlock_detected', 503, '1'],
    ['57014', 'query_canceled', 503, '1'],
    ['P0001', 'raise_exception', 500, undef],
    ['23514', 'check_violation', 500, undef],
);

# one case: the magic value's request answers $status, nothing is stored,
# the error log names the SQLSTATE, and the connection writes again
sub check_case {
    my ($route, $magic, $state, $status, $retry) = @_;

    # the "statement failed" line is logged at most once a second
    sleep 1.1;
    my $off = length $t->error_log;

    my ($req, $stored) = $route{$route}->($magic);
    my $r = $t->http(@$req);

    is($r->{status}, $status, "status $status");
    is_deeply(error_of($route, $r), expect_error($route, $status),
              'JSON error') or diag $r->{body};
    is($r->{headers}{'retry-after'}, $retry,
       defined $retry ? "Retry-After: $retry" : 'no Retry-After');
    is($stored->(), 0, 'nothing stored');
    like(substr($t->error_log, $off),
         qr/corelog: statement failed with SQLSTATE \Q$state: $REFUSED\E/,
         'the error log names the SQLSTATE');

    # a read-only server: the connection is closed and made again
    if ($state eq '25006') {
        like(substr($t->error_log, $off),
             qr/corelog: the server is read-only, closing the connection/,
             'the connection is closed');
        for (1 .. 50) {
            my ($probe, undef, $ok) = $route{$route}->();
            last if $t->http(@$probe)->{status} == $ok;
            sleep 0.1;
        }
    }

    my ($next, $next_stored, $ok) = $route{$route}->();
    is($t->http(@$next)->{status}, $ok, "the next write: $ok");
}

for my $route (qw(core_log channel_log logtank)) {
    for my $case (@cases) {
        my ($state, $what, $status, $retry) = @$case;

        subtest "$route: $state $what in a row trigger: $status" => sub {
            check_case($route, "raise:$state:" . ++$n, $state, $status,
                       $retry);
        };
    }
}

# The other transient classes, on one route: connection exceptions (08),
# operator intervention (57P), insufficient resources (53), and a
# read-only transaction (25006, a standby or a read-only pooler)

for my $case (['57P01', 'admin_shutdown'], ['08006', 'connection_failure'],
              ['53100', 'disk_full'], ['53300', 'too_many_connections'],
              ['25006', 'read_only_sql_transaction'])
{
    my ($state, $what) = @$case;

    subtest "core_log: $state $what in a row trigger: 503" => sub {
        check_case('core_log', "raise:$state:" . ++$n, $state, 503, '1');
    };
}

# After the rows: PostgreSQL sends the statement's rows (PGRES_TUPLES_OK),
# then the deferred trigger fails the COMMIT (PGRES_FATAL_ERROR).  The rows
# were rolled back: the answer is the error's, never a 201.

for my $route (qw(core_log channel_log logtank)) {
    for my $case (['P0001', 500, undef], ['40001', 503, '1']) {
        my ($state, $status, $retry) = @$case;

        subtest "$route: $state at COMMIT, after the rows: $status" => sub {
            check_case($route, "late:$state:" . ++$n, $state, $status,
                       $retry);
        };
    }
}

# Group commit: one failing row fails the statement it shares with other
# requests; their rows go again, each alone: the failing one gets the
# error, the others are stored.

# requests that nginx has read: with a warm token cache, a request whose
# header and body came in one read is queued by then
sub writing {
    my $r = $t->http(GET => '/status');
    return $r->{body} =~ /Writing: (\d+)/ ? $1 - 1 : -1;
}

sub wait_for {
    my ($cond) = @_;
    for (1 .. 100) { return 1 if $cond->(); sleep 0.05 }
    return 0;
}

for my $route (qw(core_log channel_log)) {
    my %table = (core_log => 'corelog.core_log_claims',
                 channel_log => 'corelog.channel_logs');

    subtest "$route: a failing row fails only its own request" => sub {
        my $lock = $t->lock_table($table{$route});

        # the first one holds the only connection, waiting for the lock
        my ($first, $first_stored, $ok) = $route{$route}->();
        my $sock = $t->http_start(@$first);
        ok(wait_for(sub { $t->lock_waiters }), 'the first statement waits for the lock');

        # these three queue, and go out together in the next statement
        my @batch = ($route{$route}->(),
                     $route{$route}->("raise:P0001:" . ++$n),
                     $route{$route}->());
        my @socks = map { $t->http_start(@{ $batch[3 * $_] }) } 0 .. 2;
        ok(wait_for(sub { writing() == 4 }), 'all four are in nginx');

        sleep 1.1;
        my $off = length $t->error_log;

        $lock->rollback;
        $lock->disconnect;

        is($t->http_finish($sock)->{status}, $ok, "the first one: $ok");
        is($first_stored->(), 1, 'the first one is stored');

        my @r = map { $t->http_finish($_) } @socks;
        is_deeply([map { $_->{status} } @r], [$ok, 500, $ok],
                  "the failing row: 500, the two others: $ok");
        is_deeply(error_of($route, $r[1]), expect_error($route, 500),
                  'JSON error');
        is_deeply([map { $batch[3 * $_ + 1]->() } 0 .. 2], [1, 0, 1],
                  'the two others are stored');

        my $log = substr $t->error_log, $off;
        like($log, qr/corelog: statement failed with SQLSTATE P0001/,
             'the statement failed');
        like($log, qr/sending 3 of its rows again one by one/,
             'its rows went again one by one');

        my ($next, $next_stored) = $route{$route}->();
        is($t->http(@$next)->{status}, $ok, "the next write: $ok");
    };
}

# The "statement failed" line is logged at most once a second; the next
# line says how many were not logged meanwhile, and that count starts
# again with each line logged

subtest 'repeated statement failures: one line a second, counted' => sub {
    my $fail = sub {
        my ($req) = $route{core_log}->('raise:P0001:' . ++$n);
        is($t->http(@$req)->{status}, 500, 'a failing write: 500');
    };

    # a line that counts the lines held back before (a failed batch's
    # rows that failed again alone), then none held back
    sleep 1.1;
    $fail->();
    sleep 1.1;
    my $off = length $t->error_log;

    $fail->() for 1 .. 3;    # logged, then two not logged
    sleep 1.1;
    $fail->();               # logged: "(and 2 more not logged)"
    sleep 1.1;
    $fail->();               # logged: nothing was held back since

    my @notes = substr($t->error_log, $off)
        =~ /corelog: statement failed with SQLSTATE P0001: [^\n]*?(?:( \(and \d+ more not logged\))[^\n]*)?\n/g;
    is(scalar @notes, 3, 'three lines for five failures')
        or diag explain \@notes;
    is($notes[0], undef, 'the first: no count');
    is($notes[1], ' (and 2 more not logged)', 'the second: the two held back');
    is($notes[2], undef, 'the third: none held back since the second');
};

$t->done;
done_testing;
