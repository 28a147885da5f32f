#!/usr/bin/perl

# Group commit, measured by PostgreSQL itself.  With one connection, a
# statement held on a table lock and requests queued behind it, the queued
# rows go out in full batches: a trigger on corelog.core_log_claims records
# the rows of every statement, so a statement of corelog_batch_max - 1 or
# corelog_batch_max + 1 rows shows.  Then requests with verdicts of every
# kind (201, 404 for each missing object, 409) share one statement, and each
# answer must be the verdict of its own row: a row given to the wrong
# request shows as a wrong status or message.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $BATCH = 50;

my $t = Corelog::Test->new;

# corelog_queue_max stays at its default, 1024: far above the 121 writes
# queued here at most (an answer 503 would fail the status checks below).
# The queued writes and the held statement may wait on the lock for a
# while on a busy machine: corelog_query_timeout is long, and the token
# cache outlives the test, so that no token look-up takes the connection.

$t->write_conf(<<"EOF" . <<'EOF2');
    corelog_connections 1;
    corelog_batch_max $BATCH;
    corelog_query_timeout 60s;
    corelog_token_cache 1024 600s;

EOF
    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth;
            corelog_api core_log $ts;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }

        location = /status {
            stub_status;
        }
    }
EOF2
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $cp = $s->{core_pathname_id};
my $dbh = $t->dbh;

# the rows of every statement that inserts into core_log_claims (the first
# table the route's statement writes: one row per request that passed the
# checks); a statement-level trigger fires once per statement, even for no
# rows

$dbh->do($_) for split /;\n\n/, <<'EOF';
CREATE TABLE public.claim_statements (
    n            serial  PRIMARY KEY,
    rows         integer NOT NULL,
    request_ids  uuid[]
);

CREATE FUNCTION public.count_claims() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.claim_statements (rows, request_ids)
        SELECT count(*), array_agg(request_id) FROM new;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_claims
    AFTER INSERT ON corelog.core_log_claims
    REFERENCING NEW TABLE AS new
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_claims()
EOF

my $seq = 0;

# a request of a kind: ok (201), used (409: the warm-up's pair), rq, rs,
# cp, ts (404: that object does not exist); every request has its own
# elapsedTime and trafficUserId, to compare the answer with its stored row

my $used;

sub req {
    my ($kind, $pair) = @_;
    my ($rq, $rs) = $pair ? @$pair : $t->make_request_response($ts);
    ($rq, $rs) = @$used if $kind eq 'used';
    $seq++;

    my %b = (status => 200, method => 'GET', elapsedTime => $seq + 0.25,
             corePathnameId => $kind eq 'cp' ? Corelog::Test::uuid() : $cp,
             requestId => $kind eq 'rq' ? Corelog::Test::uuid() : $rq,
             responseId => $kind eq 'rs' ? Corelog::Test::uuid() : $rs,
             trafficUserId => "user-$seq");
    my $path = $kind eq 'ts' ? Corelog::Test::uuid() : $ts;

    return { kind => $kind, body => \%b,
             req => [POST => "/core-log/$path",
                     headers => { Authorization => "Bearer $tok",
                                  'Content-Type' => 'application/json' },
                     body => encode_json(\%b), timeout => 90] };
}

# requests nginx is working on, by stub_status ("Writing", this one too)
sub wait_for_writing {
    my ($n) = @_;
    my $w = 0;
    for (1 .. 400 * $t->timeout_factor) {
        my $r = $t->http(GET => '/status');
        ($w) = ($r->{body} // '') =~ /Writing: (\d+)/;
        return 1 if ($w // 0) >= $n;
        sleep 0.05;
    }
    diag "stub_status: Writing " . ($w // "unknown") . ", want $n";
    return 0;
}

# One statement held on the claims table, @$reqs sent meanwhile (they
# queue in nginx behind it), then the lock goes: returns the answers, the
# held one first.
sub behind_a_held_statement {
    my ($reqs) = @_;

    my $lock = $t->lock_table('corelog.core_log_claims');

    my $held = req('ok');
    my @socks = ($t->http_start(@{ $held->{req} }));
    ok($t->wait_lock_waiters, 'a statement waits for the lock');

    push @socks, map { $t->http_start(@{ $_->{req} }) } @$reqs;
    ok(wait_for_writing(@$reqs + 2), 'the other requests are in nginx');
    # from the auth phase into the write queue (nginx cannot be asked)
    sleep 0.5 * $t->timeout_factor;

    $lock->rollback;
    $lock->disconnect;

    return [map { $t->http_finish($_, timeout => 90) } @socks];
}

# the stored row of a request, as the 201 body would say it
sub stored {
    my ($rq) = @_;
    return $dbh->selectall_arrayref(q{
        SELECT id::text, response_id::text, core_pathname_id::text,
               traffic_source_id::text, elapsed_time, traffic_user_id,
               to_char(created_at AT TIME ZONE 'UTC',
                       'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
          FROM corelog.core_logs WHERE request_id = $1}, undef, $rq);
}

# warm the token cache; the warm-up's pair is the "used" one below
my $warm = req('ok');
$used = [@{ $warm->{body} }{qw(requestId responseId)}];
is($t->http(@{ $warm->{req} })->{status}, 201, 'warm-up');

subtest 'full batches: corelog_batch_max rows per statement, no more' => sub {
    $dbh->do('TRUNCATE public.claim_statements');

    # 2 * 50 + 20 requests behind the held one: 50, 50 and the rest
    my @reqs = map { req('ok') } 1 .. 2 * $BATCH + 20;
    my $res = behind_a_held_statement(\@reqs);

    my @st = map { $_->{status} } @$res;
    is(scalar(grep { $_ == 201 } @st), @reqs + 1, 'all 201')
        or diag "statuses: @st";

    my $stmts = $dbh->selectall_arrayref(
        'SELECT rows, request_ids::text[] FROM public.claim_statements
          ORDER BY n');
    my @rows = map { $_->[0] } @$stmts;
    diag "rows per statement: @rows";

    my ($max) = sort { $b <=> $a } @rows;
    is($max, $BATCH, 'a full statement holds exactly corelog_batch_max rows');
    is(scalar(grep { $_ > $BATCH } @rows), 0,
       'no statement holds more than corelog_batch_max rows');
    cmp_ok(scalar @rows, '<', @reqs + 1,
           'rows of many requests share a statement');

    my %seen;
    $seen{$_}++ for map { @{ $_->[1] } } @$stmts;
    my @want = map { $_->{body}{requestId} } @reqs;
    is(scalar(grep { ($seen{$_} // 0) == 1 } @want), scalar @want,
       'each request in exactly one statement');
};

subtest 'one statement, every verdict: each answer is its own row' => sub {
    $dbh->do('SELECT pg_stat_statements_reset()');

    # O 201, U 409 (used), R 404 request, S 404 response, C 404 pathname,
    # T 404 traffic source; D and E: two requests each for one pair (one
    # 201, one 409); irregular, neither periodic nor a palindrome
    my $pattern = 'OROUOOTSOCDOORUOSOOTOECOOUORSOTDOCOOUEO';
    my %kind = (O => 'ok', U => 'used', R => 'rq', S => 'rs', C => 'cp',
                T => 'ts', D => 'ok', E => 'ok');
    my %pair = map { $_ => [$t->make_request_response($ts)] } qw(D E);

    my @reqs = map { req($kind{$_}, $pair{$_}) } split //, $pattern;
    cmp_ok(scalar @reqs, '<', $BATCH, 'fewer than a batch');

    my $res = behind_a_held_statement(\@reqs);
    is(shift(@$res)->{status}, 201, 'the held one: 201');

    my %want = (ok => [201, undef], used => [409, undef],
                rq => [404, 'Request not found'],
                rs => [404, 'Response not found'],
                cp => [404, 'Core pathname not found'],
                ts => [404, 'Traffic source not found']);

    my ($wrong, %dup) = (0);
    for my $i (0 .. $#reqs) {
        my $q = $reqs[$i];
        my $r = $res->[$i];
        my $c = substr $pattern, $i, 1;
        my ($status, $msg) = @{ $want{ $q->{kind} } };
        my $why;

        if ($c eq 'D' || $c eq 'E') {
            # which of the two is first in the statement is nginx's choice
            push @{ $dup{$c} }, [$q, $r];
            $why = "status $r->{status}"
                unless $r->{status} == 201 || $r->{status} == 409;

        } elsif ($r->{status} != $status) {
            $why = "status $r->{status}, want $status";

        } elsif (defined $msg && ($r->{json}{message} // '') ne $msg) {
            $why = "message \"" . ($r->{json}{message} // '') . "\"";
        }

        # the row stored for the request (none but for a 201) is the one
        # the answer describes

        my $rows = stored($q->{body}{requestId});
        my $b = $q->{body};

        if ($r->{status} == 201 && !$why) {
            my $j = $r->{json} // {};
            my @cmp = (
                [answer_requestId => $j->{requestId}, $b->{requestId}],
                [answer_elapsedTime => $j->{elapsedTime}, $b->{elapsedTime}],
                [answer_trafficUserId => $j->{trafficUserId},
                 $b->{trafficUserId}],
                [rows => scalar @$rows, 1]);
            my $row = $rows->[0] // [];
            push @cmp, [id => $row->[0], $j->{id}],
                       [response_id => $row->[1], $b->{responseId}],
                       [core_pathname_id => $row->[2], $b->{corePathnameId}],
                       [traffic_source_id => $row->[3], $ts],
                       [elapsed_time => $row->[4], $b->{elapsedTime}],
                       [traffic_user_id => $row->[5], $b->{trafficUserId}],
                       [created_at => $row->[6], $j->{createdAt}];
            my @diff = grep { ($_->[1] // '') ne ($_->[2] // '') } @cmp;
            $why = 'stored row or answer differs: '
                   . join ', ', map { join ' ', $_->[0], $_->[1] // 'null',
                                           'vs', $_->[2] // 'null' } @diff
                if @diff;

        } elsif (!$why && $q->{kind} ne 'used' && $c !~ /[DE]/ && @$rows) {
            $why = 'a row is stored';
        }

        next unless $why;
        $wrong++;
        diag "request $i ($c): $why" if $wrong <= 5;
    }

    for my $c (sort keys %dup) {
        my @st = sort map { $_->[1]{status} } @{ $dup{$c} };
        my ($won) = grep { $_->[1]{status} == 201 } @{ $dup{$c} };
        my $rows = stored($pair{$c}[0]);
        next if "@st" eq '201 409' && @$rows == 1
                && $rows->[0][0] eq ($won->[1]{json}{id} // '');
        $wrong++;
        diag "pair $c: statuses @st, stored " . encode_json($rows);
    }

    is($wrong, 0, 'each answer is the verdict and the row of its own request');

    is(scalar @{ stored($used->[0]) }, 1, 'the used pair: still one row');

    # the held statement and one more: all of these were in one statement
    my ($calls, $rows) = $dbh->selectrow_array(q{
        SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0)
          FROM pg_stat_statements WHERE query LIKE 'WITH input AS%'});
    is("$calls $rows", '2 ' . (@reqs + 1),
       'the requests shared one statement (2 statements, one row each)');
};

$t->done;
done_testing;
