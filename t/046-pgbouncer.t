#!/usr/bin/perl

# nginx -> PgBouncer 1.18 (transaction pooling, 2 server connections for
# the 8 of nginx's pool) -> PostgreSQL, with corelog_prepared_statements
# off:
#
#   - the three routes answer 201/202 and store their rows;
#   - concurrent writes share statements (group commit), also through the
#     pooler's few server connections;
#   - PostgreSQL stopped behind PgBouncer: writes answer 503 (never 201),
#     and 201 again once it is back, without touching nginx;
#   - PgBouncer restarted (stopped, killed), also under load: writes
#     answer 503 meanwhile, then 201 again;
#   - through all of it, every request answered 201/202 is stored exactly
#     once under the id it answered, nothing answered 503 is stored, and
#     nothing is stored that was not sent (a 504 may be: outcome unknown).
#
# Then corelog_prepared_statements on behind the same pooler: PgBouncer
# refuses the startup option statement_timeout comes in (503, the error
# log says why); with ignore_startup_parameters = options, named
# statements prepared on one server connection and executed on another
# fail with SQLSTATE 26000, and the error log names
# corelog_prepared_statements off rather than the module failing quietly.
#
# The times to recover are shown (diag) for docs/operations.md; they are
# bounded generously, not asserted as speeds.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Corelog::Test;
use Corelog::Bouncer;

plan skip_all => "no $Corelog::Bouncer::BIN" unless Corelog::Bouncer::available();

# the pooler's settings that docs/operations.md recommends: a statement
# that waits for a server connection longer than query_wait_timeout gets
# an error (503) before corelog_query_timeout would make it a 504; a
# failed server login is tried again after server_login_retry

my %POOLER = (pool_mode => 'transaction', default_pool_size => 2,
              query_wait_timeout => 2, server_login_retry => 1);

my $t = Corelog::Test->new;
my $pgb = Corelog::Bouncer->new($t, %POOLER);
my $conninfo = $pgb->conninfo;

sub conf {
    my ($prepared) = @_;
    my $http = <<"EOF";
    corelog_postgres "$conninfo";
    corelog_prepared_statements $prepared;
    corelog_connections 4;
    corelog_batch_max 100;
    corelog_query_timeout 5s;
    corelog_token_cache 1024 600s;

EOF
    $t->write_conf($http . Corelog::Test::routes_server(),
                   no_postgres => 1, workers => 2);
}

conf('off');
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-a');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $ch = $t->make_channel($acc);
my $group = $t->make_log_group($acc, 'proj-a');
my $stream = $t->make_log_stream($group);

# request/response pairs for the core logs, made while PostgreSQL is up
my @pairs = @{ $t->dbh->selectall_arrayref(q{
    WITH rq AS (
        INSERT INTO corelog.requests (traffic_source_id, method, url)
        SELECT $1, 'GET', '/p' || g FROM generate_series(1, 6000) g
        RETURNING id),
    rs AS (
        INSERT INTO corelog.responses (traffic_source_id, status)
        SELECT $1, 200 FROM generate_series(1, 6000) g
        RETURNING id)
    SELECT rq.id::text, rs.id::text
      FROM (SELECT id, row_number() OVER () n FROM rq) rq
      JOIN (SELECT id, row_number() OVER () n FROM rs) rs USING (n)},
    undef, $ts) };

# every request sent: [route, key, status, id answered, phase]
my @sent;
my $phase = 'start';
my $n = 0;

sub req {
    my ($route) = @_;
    $n++;

    if ($route eq 'core') {
        my $p = shift @pairs or die "out of request/response pairs\n";
        return [core => $p->[0],
                POST => "/core-log/$ts",
                headers => { Authorization => "Bearer $tok",
                             'Content-Type' => 'application/json' },
                body => encode_json({ status => 200, method => 'GET',
                                      elapsedTime => 1,
                                      corePathnameId => $s->{core_pathname_id},
                                      requestId => $p->[0],
                                      responseId => $p->[1] })];
    }

    if ($route eq 'channel') {
        my $marker = "pgb-$$-$n";
        return [channel => $marker,
                POST => '/api/v1/log/create',
                headers => { Authorization => "Bearer $tok",
                             'Content-Type' => 'application/json' },
                body => encode_json({ channel_id => $ch, label => $marker,
                                      body => 'through PgBouncer' })];
    }

    my $res = "pgb-$$-$n";
    return [logtank => $res,
            POST => '/v1/logtanks',
            headers => { 'X-Auth-Token' => $tok,
                         'Content-Type' => 'application/json' },
            body => encode_json({ logtank => {
                resource_type => 'LISTENER', resource_id => $res,
                log_group_id => $group, log_stream_id => $stream } })];
}

sub record {
    my ($req, $r) = @_;
    my $id = $req->[0] eq 'core'    ? $r->{json} && $r->{json}{id}
           : $req->[0] eq 'logtank' ? $r->{json} && $r->{json}{logtank}
                                      && $r->{json}{logtank}{id}
           : undef;
    push @sent, [$req->[0], $req->[1], $r->{status}, $id, $phase];
    return $r;
}

sub post {
    my ($route) = @_;
    my $req = req($route);
    my (undef, undef, @http) = @$req;
    return record($req, $t->http(@http, timeout => 30));
}

# a wave of $size requests at once, the routes in turn
my @ROUTES = qw(core channel logtank);

sub wave {
    my ($size, @routes) = @_;
    @routes = @ROUTES unless @routes;
    my @reqs = map { req($routes[$_ % @routes]) } 0 .. $size - 1;
    my $res = $t->http_many([map { [@$_[2 .. $#$_]] } @reqs], timeout => 60);
    return [map { record($reqs[$_], $res->[$_]) } 0 .. $#reqs];
}

sub ok_status { $_[0] eq 'channel' ? 202 : 201 }

# polls one route every 0.1 s until it succeeds, at most $secs; returns
# the seconds it took (undef: never) and the statuses seen
sub until_ok {
    my ($secs, $route) = @_;
    $route //= 'core';
    my @seen;
    my $start = time;
    while (time < $start + $secs) {
        my $r = post($route);
        push @seen, $r->{status};
        return (time - $start, @seen) if $r->{status} == ok_status($route);
        sleep 0.1;
    }
    return (undef, @seen);
}

sub statuses {
    my %st;
    $st{$_->{status}}++ for @_;
    return join ' ', map { "$_:$st{$_}" } sort keys %st;
}

my %recover;    # what => seconds to the first success

subtest 'the three routes through PgBouncer' => sub {
    $phase = 'the three routes through PgBouncer';
    my ($secs, @seen) = until_ok(15, 'core');
    ok(defined $secs, 'warm-up: 201') or diag "statuses: @seen";

    my $r = post('core');
    is($r->{status}, 201, 'core log: 201');
    like($r->{json}{id} // '', qr/^[0-9a-f-]{36}$/, 'with its id');

    $r = post('channel');
    is($r->{status}, 202, 'channel log: 202');
    is($r->{body}, '{}', '{}');

    $r = post('logtank');
    is($r->{status}, 201, 'logtank: 201');
    like($r->{json}{logtank}{id} // '', qr/^[0-9a-f-]{36}$/, 'with its id');

    my ($sv) = grep { $_->{database} eq 'corelog' }
               @{ $pgb->admin('SHOW POOLS') };
    cmp_ok($sv->{sv_active} + $sv->{sv_idle} + $sv->{sv_used}, '<=', 2,
           'PgBouncer uses at most 2 server connections');
    cmp_ok($sv->{cl_active} + $sv->{cl_waiting}, '>', 2,
           'for more client connections of nginx')
        or diag explain $sv;
};

subtest 'group commit through PgBouncer' => sub {
    $phase = 'group commit through PgBouncer';
    $t->dbh->do('SELECT pg_stat_statements_reset()');

    my $res = wave(300);
    is(statuses(@$res), '201:200 202:100', 'every write succeeds');

    # the statements, as PostgreSQL counted them: each returns a row per
    # request it carries
    my $st = $t->dbh->selectall_arrayref(q{
        SELECT CASE WHEN query ~ 'core_logs' THEN 'core'
                    WHEN query ~ 'channel_logs' THEN 'channel'
                    ELSE 'logtank' END, sum(calls), sum(rows)
          FROM pg_stat_statements
         WHERE query ~ 'INSERT INTO corelog\.(core_logs|channel_logs|logtanks)'
         GROUP BY 1 ORDER BY 1});
    diag join ', ', map { "$_->[0]: $_->[2] rows in $_->[1] statements" }
                    @$st;

    my %calls = map { $_->[0] => $_->[1] } @$st;
    my %rows = map { $_->[0] => $_->[2] } @$st;
    cmp_ok($calls{$_} // 0, '<', $rows{$_} // 0,
           "$_: rows of many requests share a statement")
        for qw(core channel);
};

subtest 'PostgreSQL stopped behind PgBouncer' => sub {
    $phase = 'PostgreSQL stopped behind PgBouncer';
    $t->pg_stop;
    my $from = length $t->error_log;
    my $pgb_from = length $pgb->log;
    my $stopped = time;

    # for a while: one at a time, then waves
    my @res;
    my $until = time + 4;
    push @res, post($ROUTES[@res % 3]) while time < $until;
    push @res, @{ wave(30) } for 1 .. 2;

    is(scalar(grep { $_->{status} == 201 || $_->{status} == 202 } @res), 0,
       'no write succeeds') or diag statuses(@res);
    is(scalar(grep { $_->{status} != 503 } @res), 0,
       'every write answers 503') or diag statuses(@res);
    my @bad = grep { $_->{status} && !($_->{json} && %{ $_->{json} }) }
              @res;
    is(scalar @bad, 0, 'JSON errors');

    my $log = substr $t->error_log, $from;
    like($log, qr/corelog: PostgreSQL is unavailable/,
         'the outage is logged')
        or diag $log;

    # PgBouncer accepts new connections and closes them at the first
    # statement: each is a failed attempt (an error once, then info), and
    # the reconnect delay grows as for a refused connection
    my $lost = () = $log =~ /\[error\].*corelog: PostgreSQL (?:connection lost|closed an idle connection)/g;
    cmp_ok($lost, '<=', 8, 'a lost connection is an error once per '
                           . 'connection and outage (2 workers x 4)');
    my $attempts = () = substr($pgb->log, $pgb_from)
                        =~ /corelog\/postgres\@\S+ login attempt/g;
    diag "$lost connections lost logged as errors, $attempts connection "
         . "attempts to PgBouncer in " . sprintf('%.1f s', time - $stopped);

    $t->pg_start;
    my ($secs, @seen) = until_ok(30, 'core');
    ok(defined $secs, '201 again once PostgreSQL is back')
        or diag "statuses: @seen";
    $recover{'PostgreSQL back'} = $secs;
    diag sprintf "PostgreSQL back: 201 after %.1f s (%d requests)",
                 $secs // -1, scalar @seen;
    ok(!grep({ $_ != 503 && $_ != 201 } @seen), 'only 503 before that')
        or diag "statuses: @seen";

    is(statuses(@{ wave(30) }), '201:20 202:10', 'then every write succeeds');
};

subtest 'PgBouncer restarted' => sub {
    $phase = 'PgBouncer restarted';
    for my $sig (qw(TERM KILL)) {
        $pgb->stop($sig);

        my @res = map { post($ROUTES[$_ % 3]) } 0 .. 5;
        is(statuses(@res), '503:6', "stopped ($sig): 503");

        $pgb->start;
        my ($secs, @seen) = until_ok(30, 'core');
        ok(defined $secs, "started again: 201") or diag "statuses: @seen";
        $recover{"PgBouncer restarted ($sig)"} = $secs;
        diag sprintf "PgBouncer restarted (%s): 201 after %.1f s",
                     $sig, $secs // -1;
        ok(!grep({ $_ != 503 && $_ != 201 } @seen), 'only 503 before that')
            or diag "statuses: @seen";
    }
};

# a child stops and starts PostgreSQL or restarts PgBouncer while the
# parent sends waves of writes
sub under_load {
    my ($what, $action) = @_;

    # the child leaves without cleaning up (no END blocks, no DESTROY)
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $pgb->{owner_pid} = $$;
        sleep 0.5;
        eval { $action->(); 1 } or print STDERR "# $what: $@";
        POSIX::_exit(0);
    }

    my @res;
    my $deadline = time + 8;
    for (1 .. 80) {
        push @res, @{ wave(30) };
        last if time > $deadline;
        sleep 0.05;
    }
    waitpid $pid, 0;

    my %st;
    $st{$_->{status}}++ for @res;
    diag "$what under load: " . statuses(@res);

    my @odd = grep { $_->{status} !~ /^(?:201|202|503|504)$/ } @res;
    is(scalar @odd, 0, "$what under load: every answer is 201/202/503/504")
        or diag statuses(@res);
    ok($st{503} || $st{504}, 'the outage was felt') or diag statuses(@res);

    my ($secs, @seen) = until_ok(30, 'channel');
    ok(defined $secs, 'writes succeed afterwards') or diag "statuses: @seen";
}

subtest 'PostgreSQL restarted under load' => sub {
    $phase = 'PostgreSQL restarted under load';
    # longer than query_wait_timeout: a shorter one is not felt at all,
    # the pooler holds the statements until PostgreSQL is back
    under_load('PostgreSQL restart', sub {
        $t->pg_stop;
        sleep 4;
        $t->pg_start;
    });
    $t->{pg_running} = 1;
};

subtest 'PgBouncer restarted under load' => sub {
    $phase = 'PgBouncer restarted under load';
    under_load('PgBouncer restart', sub {
        $pgb->stop('TERM');
        sleep 1;
        $pgb->start;
    });
    $pgb->pid;    # the new one's pid, for the parent's stop
};

diag join '; ', map { sprintf '%s: %.1f s', $_, $recover{$_} // -1 }
                sort keys %recover;

# named prepared statements behind a transaction pooler: the module sends
# statement_timeout as a startup option, which PgBouncer 1.18 refuses
# unless ignore_startup_parameters lists it; and a statement prepared on
# one server connection is executed on another

subtest 'corelog_prepared_statements on behind the pooler' => sub {
    $t->stop;
    conf('on');
    my $from = length $t->error_log;
    $t->run;

    my @res = @{ wave(30) };
    is(scalar(grep { $_->{status} != 503 } @res), 0,
       'PgBouncer refuses the startup option: 503')
        or diag statuses(@res);
    my $log = $t->wait_log($from, qr/unsupported startup parameter/, 5);
    like($log, qr/\[error\].*corelog: could not connect to PostgreSQL: (?#
                  )FATAL: unsupported startup parameter: options (?#
                  )\(a pooler that refuses startup options: set (?#
                  )corelog_prepared_statements off\)/,
         'the error log says why, and what to do');

    $t->stop;
    $pgb->stop;
    $pgb = Corelog::Bouncer->new($t, %POOLER,
                                 ignore_startup_parameters => 'options');
    $conninfo = $pgb->conninfo;
    conf('on');
    $from = length $t->error_log;
    $t->run;

    @res = ();
    push @res, @{ wave(30) } for 1 .. 5;
    diag 'prepared statements on, the option ignored: ' . statuses(@res);
    ok(scalar(grep { $_->{status} >= 500 } @res),
       'named statements fail through the pooler');

    # a statement executed where it was not prepared fails with 26000;
    # its Parse where another connection prepared it with 42P05
    $log = $t->wait_log($from, qr/corelog_prepared_statements off/, 5);
    like($log, qr/\[error\].*corelog: (?:statement|preparing) failed (?#
                  )with SQLSTATE (?:26000|42P05)/,
         'the error log shows 26000 or 42P05');

    like($log, qr/\[error\].*corelog: the connection's prepared statements (?#
                  )are not its own \(SQLSTATE (?:26000|42P05)\), closing it (?#
                  ).*corelog_prepared_statements off/,
         'the error log names corelog_prepared_statements off');
};

subtest 'nothing acknowledged is lost' => sub {
    $phase = 'nothing acknowledged is lost';
    my $dbh = $t->dbh;
    my %stored;

    for (@{ $dbh->selectall_arrayref(q{
            SELECT request_id::text, id::text FROM corelog.core_logs}) })
    {
        push @{ $stored{core}{$_->[0]} }, $_->[1];
    }
    for (@{ $dbh->selectall_arrayref(q{
            SELECT label, id::text FROM corelog.channel_logs}) })
    {
        push @{ $stored{channel}{$_->[0]} }, $_->[1];
    }
    for (@{ $dbh->selectall_arrayref(q{
            SELECT resource_id, id::text FROM corelog.logtanks}) })
    {
        push @{ $stored{logtank}{$_->[0]} }, $_->[1];
    }

    my (%count, @lost, @twice, @wrong_id, @unsent, @stored5xx);
    my %sent;

    for my $x (@sent) {
        my ($route, $key, $status, $id) = @$x;
        $sent{$route}{$key} = 1;
        my $rows = $stored{$route}{$key} // [];

        if ($status == ok_status($route)) {
            $count{acked}++;
            push @lost, "$route $key" unless @$rows;
            push @wrong_id, "$route $key"
                if @$rows == 1 && defined $id && $rows->[0] ne $id;
        } else {
            push @stored5xx, "$route $key ($status, $x->[4])" if @$rows;
            $count{$status}++;
        }
        push @twice, "$route $key" if @$rows > 1;
    }

    for my $route (keys %stored) {
        push @unsent, map { "$route $_" }
                      grep { !$sent{$route}{$_} } keys %{ $stored{$route} };
    }

    diag "requests: " . scalar(@sent) . ", "
         . join ', ', map { "$_: $count{$_}" } sort keys %count;

    is(scalar @lost, 0, 'every 201/202 is stored') or diag "@lost[0..9]";
    is(scalar @twice, 0, 'nothing is stored twice') or diag "@twice[0..9]";
    is(scalar @wrong_id, 0, 'under the id answered')
        or diag "@wrong_id[0..9]";
    is(scalar @unsent, 0, 'nothing is stored that was not sent')
        or diag "@unsent[0..9]";
    # a 503 is a write that surely did not commit; a 504's outcome is
    # unknown (PgBouncer's immediate shutdown cut the connection while the
    # server may have committed it)
    my @unknown = grep { /\(504, / } @stored5xx;
    @stored5xx = grep { !/\(504, / } @stored5xx;
    diag scalar(@unknown) . " of $count{504} writes answered 504 are stored"
        if $count{504};

    is(scalar @stored5xx, 0, 'nothing answered 503 or 500 is stored')
        or diag join "\n", @stored5xx;
};

$t->done;
$pgb->stop;
done_testing;
