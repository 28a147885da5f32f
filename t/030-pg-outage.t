#!/usr/bin/perl

# PostgreSQL down at start, restarted under the module, and a connection
# killed mid-statement: nginx keeps serving (503 + Retry-After while no
# connection is up) and recovers without a restart.  Through all of it,
# every request reaches the database at most once (a trigger logs each row
# proposed to core_log_claims, so a statement sent again shows even where
# the claims table turns its rows into 409s), and the rows stored are
# exactly those of the requests answered 201.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;

# fixtures first, then PostgreSQL goes down before nginx starts

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my @pairs = map { [$t->make_request_response($ts)] } 1 .. 30;

# each row proposed for a claim, in PostgreSQL's log: outside of the
# statement's transaction, so also when the statement fails or is retried
# (a LOG message goes to the server log only, not to nginx)
$t->dbh->do(<<'EOF');
CREATE FUNCTION public.log_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE LOG 'corelog test: claim proposed for %', NEW.request_id;
    RETURN NEW;
END
$$
EOF
$t->dbh->do('CREATE TRIGGER log_claim BEFORE INSERT ON corelog.core_log_claims
             FOR EACH ROW EXECUTE FUNCTION public.log_claim()');

my %answered;    # request id => status

$t->pg_stop;
$t->write_shipped_conf;
$t->run;

sub post {
    my $pair = shift @pairs or die "out of fixtures";
    my $r = $t->http(POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $pair->[0],
                              responseId => $pair->[1] }));
    $answered{$pair->[0]} = $r->{status};
    return $r;
}

# poll until a 201, at most $secs; returns the statuses seen
sub until_201 {
    my ($secs) = @_;
    my @seen;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $r = post();
        push @seen, $r->{status};
        return @seen if $r->{status} == 201;
        sleep 0.2;
    }
    return @seen;
}

subtest 'PostgreSQL down at start: 503, nginx serving' => sub {
    sleep 0.5;
    my $r = post();
    is($r->{status}, 503, 'status 503');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'Retry-After');
};

subtest 'PostgreSQL started: 201 without restarting nginx' => sub {
    $t->pg_start;
    my @seen = until_201(15);
    is($seen[-1], 201, 'a 201 after PostgreSQL came up')
        or diag "statuses: @seen";
    ok(!grep({ $_ != 503 && $_ != 201 } @seen), 'only 503 before that')
        or diag "statuses: @seen";
    is(post()->{status}, 201, 'and the next one');
};

subtest 'PostgreSQL restarted under the module' => sub {
    $t->pg_restart;
    my @seen = until_201(15);
    is($seen[-1], 201, 'requests succeed after the restart')
        or diag "statuses: @seen";
    ok(!grep({ $_ != 503 && $_ != 201 } @seen), 'only 503 meanwhile')
        or diag "statuses: @seen";
    is(post()->{status}, $_, "then 201 again ($_)") for (201) x 3;
};

subtest 'a connection killed mid-statement fails only its request' => sub {
    my $dbh = $t->dbh;
    my $lock = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                            { AutoCommit => 0, RaiseError => 1 });
    $lock->do('LOCK TABLE corelog.core_log_claims IN EXCLUSIVE MODE');

    my $sock = $t->http_start(POST => "/core-log/$ts",
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $pairs[0][0],
                              responseId => $pairs[0][1] }));
    my $killed_rq = (shift @pairs)->[0];

    # wait until the insert is waiting for the lock, then kill its backend
    my $killed = 0;
    for (1 .. 50) {
        $killed = $dbh->selectrow_array(q{
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'nginx-corelog'
               AND wait_event_type = 'Lock'
        });
        last if $killed;
        sleep 0.1;
    }
    is($killed, 1, 'the waiting insert was killed')
        or diag explain $dbh->selectall_arrayref(q{
            SELECT application_name, wait_event_type, state, left(query, 40)
              FROM pg_stat_activity});

    my $r = $t->http_finish($sock);
    $answered{$killed_rq} = $r->{status};
    is($r->{status}, 503, 'its request: 503');
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'Retry-After');
    $lock->rollback;
    $lock->disconnect;

    my @seen = until_201(10);
    is($seen[-1], 201, 'the next requests succeed') or diag "@seen";
};

is(scalar keys %answered, 30 - @pairs, 'every request sent was answered');

# the rows stored are those of the requests answered 201, once each: no
# 201 without its row, no row for a 503 (each of these failed before its
# statement could commit: PostgreSQL down, or the statement killed while
# waiting for the lock), and no request stored twice

my $stored = $t->dbh->selectall_arrayref(q{
    SELECT request_id::text, count(*) FROM corelog.core_logs
     GROUP BY request_id});
my %stored = map { @$_ } @$stored;
my @ok = sort grep { $answered{$_} == 201 } keys %answered;
is_deeply(\%stored, { map { $_ => 1 } @ok },
          'no more rows than requests sent: one row per 201, none else')
    or diag explain { answered => \%answered, stored => \%stored };

# and no request was proposed to the database twice (a statement sent
# again, or one request twice in a statement); the 201s once each

my %proposed;
$proposed{$_}++
    for $t->pg_log =~ /corelog test: claim proposed for ([-0-9a-f]{36})/g;
my @twice = grep { $proposed{$_} > 1 } sort keys %proposed;
is("@twice", '', 'no request reached the database twice');
is(scalar(grep { ($proposed{$_} // 0) == 1 } @ok), scalar @ok,
   'each 201 reached the database once');
ok(!grep({ !exists $answered{$_} } keys %proposed),
   'the database saw only requests that were sent');

$t->done;
done_testing;
