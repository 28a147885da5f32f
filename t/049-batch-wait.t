#!/usr/bin/perl

# corelog_batch_wait, with one worker and one connection: the clients
# answered by a write statement of 4 rows or more go together in the next
# statement, even when they come back one by one, as long as they come
# within corelog_batch_wait; fewer still go, once it has passed; after a
# statement of fewer than 4 rows nothing waits.  PostgreSQL counts the
# rows of every statement (a statement-level trigger on
# corelog.core_log_claims, as in t/041).  The wait here is seconds long, so
# that a request sent 0.1 s after another is within it on any machine.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;

my $WAIT = 3 * $t->timeout_factor;
my $QUERY = 4 * $WAIT + 20;

$t->write_conf(<<"EOF" . Corelog::Test::core_log_server());
    corelog_connections 1;
    corelog_batch_wait ${WAIT}s;
    corelog_query_timeout ${QUERY}s;
    corelog_token_cache 1024 600s;

EOF
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $cp = $s->{core_pathname_id};
my $dbh = $t->dbh;

$dbh->do($_) for split /;\n\n/, <<'EOF';
CREATE TABLE public.claim_statements (
    n     serial  PRIMARY KEY,
    rows  integer NOT NULL
);

CREATE FUNCTION public.count_claims() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.claim_statements (rows) SELECT count(*) FROM new;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_claims
    AFTER INSERT ON corelog.core_log_claims
    REFERENCING NEW TABLE AS new
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_claims()
EOF

# a core log of its own pair, ready to send
sub req {
    my ($rq, $rs) = $t->make_request_response($ts);
    my $b = encode_json({ status => 200, method => 'GET', elapsedTime => 1,
                          corePathnameId => $cp, requestId => $rq,
                          responseId => $rs });
    return [POST => "/core-log/$ts",
            headers => { Authorization => "Bearer $tok",
                         'Content-Type' => 'application/json' },
            body => $b, timeout => $QUERY];
}

# the rows of each statement since the last call
sub statements {
    my $rows = $dbh->selectcol_arrayref(
        'SELECT rows FROM public.claim_statements ORDER BY n');
    $dbh->do('TRUNCATE public.claim_statements');
    return "@$rows";
}

# requests sent one by one, $gap seconds apart, then all answered; the
# answers, and how long the first took
sub one_by_one {
    my ($gap, @reqs) = @_;
    my $t0 = time;
    my @socks;
    for my $r (@reqs) {
        sleep $gap if @socks;
        push @socks, $t->http_start(@$r);
    }
    my $first = $t->http_finish(shift @socks, timeout => $QUERY);
    my $took = time - $t0;
    return ($took, $first, map { $t->http_finish($_, timeout => $QUERY) }
                               @socks);
}

# One statement held on the claims table and $n requests queued behind
# it: once it has committed, they go as one statement of $n.  The answers'
# statuses, the held one's first.
sub a_statement_of {
    my ($n) = @_;
    my @reqs = map { req() } 0 .. $n;

    my $lock = $t->lock_table('corelog.core_log_claims');
    my @socks = ($t->http_start(@{ $reqs[0] }));
    ok($t->wait_lock_waiters, 'a statement waits for the lock');
    push @socks, map { $t->http_start(@$_) } @reqs[1 .. $n];
    # from the auth phase into the write queue (nginx cannot be asked)
    sleep 0.5 * $t->timeout_factor;
    $lock->rollback;
    $lock->disconnect;

    return join ' ',
        map { $t->http_finish($_, timeout => $QUERY)->{status} } @socks;
}

is($t->http(@{ req() })->{status}, 201, 'warm-up: the token is cached');
statements();

subtest 'the clients of a statement of 5 go together in the next one' => sub {
    my @next = map { req() } 1 .. 5;

    is(a_statement_of(5), '201 201 201 201 201 201', 'the six: 201');
    is(statements(), '1 5', 'the held one, then the five in one statement');

    # their clients come back one by one, 0.1 s apart
    my ($took, @res) = one_by_one(0.1, @next);
    my @st = map { $_->{status} } @res;
    is("@st", '201 201 201 201 201', 'the five again: 201') or diag "@st";
    is(statements(), '5',
       'sent one by one, they went in one statement of 5');
    is($dbh->selectrow_array(
           'SELECT count(*) FROM corelog.core_logs WHERE request_id = ANY(?)',
           undef, [map { decode_json($_->[5])->{requestId} } @next]),
       5, 'their five rows are stored');
};

subtest 'fewer clients than expected go once corelog_batch_wait has passed'
    => sub {
    # the last statement had 5 rows: the next waits for 5
    my ($took, @res) = one_by_one(0.1, req(), req());
    my @st = map { $_->{status} } @res;
    is("@st", '201 201', 'both 201') or diag "@st";
    is(statements(), '2', 'they went together, in one statement of 2');
    cmp_ok($took, '>=', 0.9 * $WAIT,
           'the first waited for the others, about corelog_batch_wait');
};

subtest 'after a statement of fewer than 4 rows nothing waits' => sub {
    # the last statement had 2 rows
    my ($took, @res) = one_by_one(0.3 * $t->timeout_factor, req(), req());
    my @st = map { $_->{status} } @res;
    is("@st", '201 201', 'both 201') or diag "@st";
    is(statements(), '1 1', 'each went at once, alone');
};

subtest 'clients that come after corelog_batch_wait are not waited for'
    => sub {
    is(a_statement_of(4), '201 201 201 201 201', 'the five: 201');
    is(statements(), '1 4', 'the held one, then the four in one statement');

    # longer than corelog_batch_wait later, two requests 0.3 s apart
    sleep 1.5 * $WAIT;
    my ($took, @res) = one_by_one(0.3 * $t->timeout_factor, req(), req());
    my @st = map { $_->{status} } @res;
    is("@st", '201 201', 'both 201') or diag "@st";
    is(statements(), '1 1', 'each went at once, alone');
};

$t->done;
done_testing;
