#!/usr/bin/perl

# The status endpoint (corelog_status_zone, corelog_status) with the
# shipped configuration and two workers.  A known mix of answers, sent
# concurrently so that both workers serve it (100 x 201, 30 x 202, 20 x
# 400, 10 x 401, 5 x 404, 3 x 409, 2 logtanks, then 7 x 503 with
# PostgreSQL stopped): every counter of the status is exactly what was
# sent, and what PostgreSQL did (statements, rows, connections, the
# outage).  A reload keeps the zone: nothing goes backwards, the next
# answer adds one.  Then the formats (JSON, Prometheus's text, which
# promtool accepts and a real Prometheus scrapes), the methods, who may
# read it, what the queues and the pool count when PostgreSQL is silent or
# slow, and what nginx -t refuses.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;
use Corelog::Prometheus;

# the schema version the database has: the newest migration, sql/NNN_*.sql
my ($schema) = sort { $b <=> $a }
               map { m{/(\d{3})_\w+\.sql$} ? $1 + 0 : () }
               glob "$FindBin::Bin/../sql/*.sql";

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-1');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $ch = $t->make_channel($acc);
my $group = $t->make_log_group($acc, 'proj-1');
my $stream = $t->make_log_stream($group);

my %bearer = (Authorization => "Bearer $tok",
              'Content-Type' => 'application/json');

sub status {
    my (%o) = @_;
    my $r = $t->http(GET => '/status' . ($o{query} // ''),
                     port => $t->status_port,
                     headers => $o{headers} // {});
    return $r if $o{raw};
    die "status: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return decode_json($r->{body});
}

sub core_log {
    my (%o) = @_;
    my ($rq, $rs) = $o{pair} ? @{$o{pair}} : $t->make_request_response($ts);
    return [POST => '/core-log/' . ($o{ts} // $ts),
            headers => { %bearer, %{$o{headers} // {}} },
            body => encode_json({
                status => 200, method => 'GET', elapsedTime => 1.5,
                corePathnameId => $s->{core_pathname_id},
                requestId => $rq, responseId => $rs })];
}

my $n = 0;

sub channel_log {
    my (%o) = @_;
    return [POST => '/api/v1/log/create', headers => \%bearer,
            body => $o{body} // encode_json({ channel_id => $ch,
                                              label => 'l' . ++$n })];
}

sub logtank {
    return [POST => '/v1/logtanks',
            headers => { 'X-Auth-Token' => $tok,
                         'Content-Type' => 'application/json' },
            body => encode_json({ logtank => {
                resource_type => 'LISTENER', resource_id => 'res-' . ++$n,
                log_group_id => $group, log_stream_id => $stream } })];
}

sub statuses {
    my ($list) = @_;
    my %c;
    $c{$_->{status}}++ for @$list;
    return \%c;
}

# every number of a route's "requests", zeros left out
sub nonzero {
    my ($h) = @_;
    return { map { $_ => $h->{$_} } grep { $h->{$_} } keys %$h };
}

###########################################################################
# before anything: zeros, the schema version, both workers

# the pools connect in the background
my $st = status();
my $wait = time + 10 * $t->timeout_factor;
while ($st->{pool}{connects} < 8 && time < $wait) {
    sleep 0.1;
    $st = status();
}

is($st->{schema_version}, $schema,
   'the schema version read from the database');
is($st->{workers}, 2, 'two workers');
is_deeply(nonzero($st->{routes}{$_}{requests}), {}, "$_: no request yet")
    for qw(core_log channel_log logtank);
is($st->{pool}{connects}, 8, 'each worker connected its 4 connections');
is($st->{pool}{reconnects}, 0, 'a first connection is no reconnect');

###########################################################################
# the mix, all at once

my $used = core_log();
my @mix = (
    (map { core_log() } 1 .. 99), $used,
    (map { channel_log() } 1 .. 30),
    (map { channel_log(body => '{"channel_id":') } 1 .. 20),
    (map { core_log(headers => { Authorization => undef }) } 1 .. 10),
    (map { core_log(ts => Corelog::Test::uuid()) } 1 .. 5),
    (map { logtank() } 1 .. 2),
);

my $res = $t->http_many(\@mix, timeout => 60);
is_deeply(statuses($res), { 201 => 102, 202 => 30, 400 => 20, 401 => 10,
                            404 => 5 },
          'the mix was answered as meant')
    or diag explain statuses($res);

# a used request/response pair: 409, each after the other
my $body = decode_json($used->[5]);
for (1 .. 3) {
    my $r = $t->http(@{core_log(pair => [ $body->{requestId},
                                          $body->{responseId} ])});
    is($r->{status}, 409, "used pair $_: 409");
}

# PostgreSQL stops: each worker's pool sees it, then writes are 503
$t->pg_stop;
like($t->wait_log(0, qr/(?s:PostgreSQL is unavailable.*){2}/, 10),
     qr/(?s:PostgreSQL is unavailable.*){2}/, 'both workers saw PostgreSQL go');

my $down = $t->http_many([ map { channel_log() } 1 .. 7 ]);
is_deeply(statuses($down), { 503 => 7 }, '7 writes with PostgreSQL down: 503');

my $mid = status();
is($mid->{pool}{connections}{idle} + $mid->{pool}{connections}{busy}, 0,
   'no connection is up while PostgreSQL is down');
is($mid->{pool}{outages}, 2, 'an outage per worker');
is($mid->{schema_version}, $schema,
   'the schema version read before stays');

$t->pg_start;

my $deadline = time + 20 * $t->timeout_factor;
my $end;
while (time < $deadline) {
    $end = status();
    last if $end->{pool}{connections}{idle} == 8;
    sleep 0.2;
}

###########################################################################
# every counter is what was sent

my $r = $end->{routes};

is_deeply(nonzero($r->{core_log}{requests}),
          { 201 => 100, 401 => 10, 404 => 5, 409 => 3 },
          'core_log: requests by status');
is_deeply(nonzero($r->{channel_log}{requests}),
          { 202 => 30, 400 => 20, 503 => 7 },
          'channel_log: requests by status');
is_deeply(nonzero($r->{logtank}{requests}), { 201 => 2 },
          'logtank: requests by status');

is($r->{core_log}{rows_committed}, 100, 'core_log: rows committed');
is($r->{channel_log}{rows_committed}, 30, 'channel_log: rows committed');
is($r->{logtank}{rows_committed}, 2, 'logtank: rows committed');

my $dbh = $t->dbh;
is($dbh->selectrow_array('SELECT count(*) FROM corelog.core_logs'), 100,
   'core_log: 100 rows in the table');
is($dbh->selectrow_array('SELECT count(*) FROM corelog.channel_logs'), 30,
   'channel_log: 30 rows in the table');

for my $route (qw(core_log channel_log logtank)) {
    my $q = $r->{$route};
    my $answered = 0;
    $answered += $_ for values %{$q->{requests}};

    is($q->{request_seconds}{count}, $answered,
       "$route: a request time per answer");
    is($q->{request_seconds}{buckets}{'+Inf'}, $answered,
       "$route: the +Inf bucket counts them all");
    is($q->{database_seconds}{count}, $q->{rows_committed},
       "$route: a database time per committed row");

    my @b = map { $q->{request_seconds}{buckets}{$_} }
            qw(0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10);
    is_deeply([ sort { $a <=> $b } @b ], \@b,
              "$route: the buckets are cumulative");
}

my $sm = $end->{statements};
is($sm->{core_log}{rows}{sum}, 108,
   'core_log statements carried 108 rows (100 + 5 unknown + 3 used)');
is($sm->{channel_log}{rows}{sum}, 30, 'channel_log statements: 30 rows');
is($sm->{logtank}{rows}{sum}, 2, 'logtank statements: 2 rows');
cmp_ok($sm->{core_log}{sent}, '<', 108,
       'core_log rows went in fewer statements than rows (group commit)');
for my $stmt (qw(core_log channel_log logtank token_lookup)) {
    is($sm->{$stmt}{rows}{count}, $sm->{$stmt}{sent},
       "$stmt: a rows observation per statement");
}

my $tk = $end->{tokens};
is($tk->{cache_hits} + $tk->{cache_misses}, 167,
   'every token checked was a cache hit or a miss (167)');
# one token: each worker looked it up once, and its other misses waited
# for that lookup (t/024)
cmp_ok($tk->{lookups}, '>=', 1, 'the token was looked up');
cmp_ok($tk->{lookups}, '<=', 2, 'once per worker at most');
is($sm->{token_lookup}{rows}{sum}, $tk->{lookups},
   'every lookup went out in a statement');
cmp_ok($tk->{cache_misses}, '>=', 2, 'each worker looked the token up');
is($tk->{cache_evictions}, 0, 'no eviction');

is_deeply(nonzero($end->{auth}), { 204 => 167, 401 => 10 },
          'auth answers: 167 allowed, 10 refused');

is_deeply($end->{queues}{write}{depth} + $end->{queues}{lookup}{depth}, 0,
          'the queues are empty');
is($end->{queues}{write}{rejected} + $end->{queues}{write}{expired}, 0,
   'no write was rejected or expired');
cmp_ok($end->{queues}{write}{peak}, '>=', 1, 'the write queue peak');

my $p = $end->{pool};
is($p->{connections}{idle}, 8, 'all 8 connections idle again');
is($p->{connections}{broken} + $p->{connections}{connecting}, 0,
   'none broken or connecting');
is($p->{reconnects}, 8, 'each connection made again once');
is($p->{connects}, 16, '8 connects at start, 8 after the outage');
cmp_ok($p->{connect_failures}, '>=', 2, 'failed attempts during the outage');
is($p->{outages}, 2, 'one outage per worker');
cmp_ok($p->{outage_seconds}, '>', 0, 'the outage lasted');
sleep 0.3;
is(status()->{pool}{outage_seconds}, $p->{outage_seconds},
   'and is over: its seconds no longer grow');
is($p->{statement_timeouts}, 0, 'no statement timed out');

# the same numbers in Prometheus's text
my $prom = status(query => '?format=prometheus', raw => 1);
is($prom->{status}, 200, 'prometheus: 200');
like($prom->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'prometheus: its content type');

my %m;
for (split /\n/, $prom->{body}) {
    next if /^#/;
    my ($k, $v) = /^(\S+) (\S+)$/ or next;
    $m{$k} = $v;
}
# what a scrape says after the mix (the non-zero series, no buckets)
diag join "\n", 'the scrape after the mix:',
    grep { !/^#|_bucket\{| 0$/ } split /\n/, $prom->{body};

is($m{'corelog_requests_total{route="core_log",status="201"}'}, 100,
   'prometheus: core_log 201s');
is($m{'corelog_requests_total{route="channel_log",status="503"}'}, 7,
   'prometheus: channel_log 503s');
is($m{'corelog_rows_committed_total{route="channel_log"}'}, 30,
   'prometheus: channel_log rows');
is($m{'corelog_request_duration_seconds_count{route="core_log"}'}, 118,
   'prometheus: core_log request times');
is($m{'corelog_auth_answers_total{status="401"}'}, 10, 'prometheus: 401s');
is($m{'corelog_pool_connections{state="idle"}'}, 8, 'prometheus: idle');
is($m{'corelog_pool_outages_total'}, 2, 'prometheus: outages');
like($prom->{body},
     qr/^corelog_build_info\{version="\d+\.\d+\.\d+",nginx_version="[\d.]+",schema_version="$schema"\} 1$/m,
     'prometheus: build info');

SKIP: {
    skip 'no promtool (Debian package prometheus)', 2
        unless -x '/usr/bin/promtool';

    my $f = $t->dir . '/metrics.txt';
    open my $fh, '>', $f or die "$f: $!";
    print $fh $prom->{body};
    close $fh;

    my ($rc, $out) = $t->_run(['/bin/sh', '-c',
                               'exec /usr/bin/promtool check metrics < "$1"',
                               'sh', $f]);
    is($rc, 0, 'promtool check metrics: exit 0') or diag $out;
    is($out, '', 'promtool check metrics: no lint') or diag $out;
}

# a real Prometheus scrapes the status, as the docs tell one to
SKIP: {
    skip 'no Prometheus (Debian package prometheus)', 5
        unless Corelog::Prometheus::available();

    my $inst = '127.0.0.1:' . $t->status_port;
    my $pr = Corelog::Prometheus->start(dir => $t->dir, targets => [$inst],
                                        metrics_path => '/status',
                                        params => { format => ['prometheus'] },
                                        interval => '1s');
    my $tg = $pr->wait_scrape(20, $inst);
    is($tg->{health}, 'up', 'Prometheus: the status target is up')
        or diag explain $tg;

    is($pr->wait_value('corelog_requests_total{route="core_log",status="201"}',
                       100, 10),
       100, 'Prometheus: 100 core logs answered 201 arrived');
    is($pr->value('corelog_rows_committed_total{route="channel_log"}'), 30,
       'Prometheus: 30 channel logs committed');
    is($pr->value('sum(corelog_requests_total{route="channel_log"})'), 57,
       'Prometheus: 57 channel log answers in all');
    is($pr->value(qq{corelog_build_info{schema_version="$schema"}}), 1,
       'Prometheus: the build info with the schema version');
    $pr->stop;
}

###########################################################################
# a reload keeps the zone: nothing goes backwards

sub leaves {
    my ($h, $path, $out) = @_;
    for my $k (keys %$h) {
        my $v = $h->{$k};
        if (ref $v eq 'HASH') {
            leaves($v, "$path/$k", $out);
        } elsif (defined $v && $v =~ /^\d+(?:\.\d+)?$/
                 && $k !~ /version$/) {
            $out->{"$path/$k"} = $v;
        }
    }
    return $out;
}

# gauges may go down; everything else is a counter
my $GAUGE = qr{^/(?:workers|queues/\w+/depth|pool/connections/\w+)$};

my $before = leaves($end, '', {});

ok($t->reload, 'reload');

my $one = $t->http(@{channel_log()});
is($one->{status}, 202, 'a write after the reload: 202');

# a request is counted in its log phase, which may end just after the
# client has read the answer (the other worker may read the status first)
my $after = status();
my $settle = time + 5 * $t->timeout_factor;
while ($after->{routes}{channel_log}{requests}{202} < 31 && time < $settle) {
    sleep 0.05;
    $after = status();
}
my $after_l = leaves($after, '', {});

my @back = grep { $_ !~ $GAUGE && $after_l->{$_} < $before->{$_} }
           sort keys %$before;
is_deeply(\@back, [], 'no counter went backwards across the reload')
    or diag join "\n", map { "$_: $before->{$_} -> $after_l->{$_}" } @back;

is($after->{routes}{channel_log}{requests}{202}, 31,
   'the write after the reload is counted on top: 31');
is($after->{routes}{channel_log}{rows_committed}, 31, 'and its row: 31');
is($after->{since}, $end->{since}, 'the same zone (made at the same time)');
is($after->{workers}, 2, 'the old workers are gone from the sum');
is($after->{pool}{connects}, 24, 'the new workers connected 8 more');

###########################################################################
# the formats and methods

my $x = status(raw => 1, headers => {
    Accept => 'application/openmetrics-text;version=1.0.0;q=0.5,'
              . 'text/plain;version=0.0.4;q=0.4,*/*;q=0.1' });
like($x->{headers}{'content-type'}, qr{^text/plain},
     "Prometheus's own Accept: the text format");
like($x->{body}, qr/^# TYPE corelog_requests_total counter$/m,
     "Prometheus's own Accept: its TYPE lines");

$x = status(raw => 1, headers => { Accept => '*/*' });
is($x->{headers}{'content-type'}, 'application/json', 'Accept */*: JSON');
$x = status(raw => 1, query => '?format=json',
            headers => { Accept => 'text/plain' });
is($x->{headers}{'content-type'}, 'application/json',
   '?format=json wins over Accept');
is($x->{headers}{'cache-control'}, 'no-store', 'not cached');

is(status(raw => 1, query => '?format=xml')->{status}, 400,
   'an unknown format: 400');

is($t->http(POST => '/status', port => $t->status_port, body => '{}')->{status},
   405, 'POST: 405');
my $head = $t->http(HEAD => '/status', port => $t->status_port);
is($head->{status}, 200, 'HEAD: 200');
is($head->{body}, '', 'HEAD: no body');

###########################################################################
# who may read it

is($t->http(GET => '/status')->{status}, 404,
   'not on the API address');

my $other = $t->http(GET => '/status', port => $t->status_port,
                     local_addr => '127.0.0.5');
is($other->{status}, 403, 'from another address than localhost: 403');

$t->stop;

###########################################################################
# the queues' and the pool's troubles, each counted once: a server that
# accepts the connection and never answers (the lookup queue: 3 wait and
# expire, 2 are refused, and the status itself waits once for the schema
# version), then a statement held by a lock past the module's own timer

sub own_status {
    my ($v) = @_;
    my $r = $v->http(GET => '/status', port => $v->port2);
    die "status: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return decode_json($r->{body});
}

my $status_server = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT2%%;
        location = /status { corelog_status; }
    }
EOF

{
    my $v = Corelog::Test->new;
    my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => 0, Listen => 16,
                                       Proto => 'tcp')
        or die "listen: $@";
    my $sport = $silent->sockport;

    $v->write_conf(<<"EOF" . Corelog::Test::routes_server() . $status_server,
    corelog_postgres "host=127.0.0.1 port=$sport dbname=corelog connect_timeout=30";
    corelog_connections 1;
    corelog_token_queue_max 3;
    corelog_query_timeout 2s;
    corelog_connect_timeout 30s;
    corelog_status_zone 256k;
EOF
                   no_postgres => 1);
    $v->run;

    my $t0 = time;
    my $first = own_status($v);
    cmp_ok(time - $t0, '>=', 0.9,
           'a silent server: the status waits for the schema version once');
    is($first->{schema_version}, undef, 'and answers without it');
    is($first->{pool}{connections}{connecting}, 1, 'the connection connecting');

    # five tokens of the right shape (one would be looked up once: t/024)
    my $res5 = $v->http_many([ map {
        [POST => '/api/v1/log/create',
         headers => { Authorization => sprintf('Bearer clg_%064x', $_),
                      'Content-Type' => 'application/json' },
         body => '{}'] } 1 .. 5 ]);
    is_deeply(statuses($res5), { 503 => 5 }, '5 writes whose token waits: 503');

    my $q = own_status($v)->{queues}{lookup};
    is($q->{rejected}, 2, '2 lookups refused: the queue was full');
    is($q->{expired}, 4, '3 lookups and the schema version expired');
    is($q->{peak}, 3, 'the lookup queue held 3 at most');
    is($q->{depth}, 0, 'and is empty now');
    is(own_status($v)->{statements}{token_lookup}{sent}, 0,
       'no lookup went out');

    $v->stop;
    close $silent;
}

{
    my $v = Corelog::Test->new;
    $v->write_conf(<<"EOF" . Corelog::Test::routes_server() . $status_server);
    corelog_connections 1;
    corelog_query_timeout 2s;
    corelog_prepared_statements off;
    corelog_status_zone 256k;
EOF
    $v->run;

    my $acc2 = $v->make_account('acme');
    my $tok2 = $v->make_token($acc2);
    my $ch2 = $v->make_channel($acc2);
    my @w = (POST => '/api/v1/log/create',
             headers => { Authorization => "Bearer $tok2",
                          'Content-Type' => 'application/json' },
             body => encode_json({ channel_id => $ch2, label => 'x' }));

    is($v->http(@w)->{status}, 202, 'a write: 202');

    my $lock = $v->lock_table('corelog.channel_logs');
    is($v->http(@w)->{status}, 504,
       'a write held past the statement timer: 504');
    $lock->rollback;
    $lock->disconnect;

    my $s2 = own_status($v);
    is($s2->{pool}{statement_timeouts}, 1, 'one statement timed out');
    is($s2->{routes}{channel_log}{requests}{504}, 1, 'one 504');

    $v->stop;
}

# a worker killed during an outage: the outage's seconds never go back
{
    my $v = Corelog::Test->new->allow_killed;
    $v->write_conf(<<"EOF" . Corelog::Test::routes_server() . $status_server);
    corelog_connections 1;
    corelog_status_zone 256k;
EOF
    $v->run;
    $v->pg_stop;
    $v->wait_log(0, qr/PostgreSQL is unavailable/, 10);
    sleep 0.3;

    my $a1 = own_status($v)->{pool};
    cmp_ok($a1->{outage_seconds}, '>=', 0.2, 'an outage under way counts');
    my ($old) = $v->worker_pids;
    kill 'KILL', $old;

    my $wait2 = time + 10 * $v->timeout_factor;
    sleep 0.1 until time > $wait2
                    || grep { $_ != $old } $v->worker_pids;

    my $a2 = own_status($v)->{pool};
    cmp_ok($a2->{outage_seconds}, '>=', $a1->{outage_seconds},
           'the worker killed: its outage seconds stay counted');
    sleep 0.3;
    my $a3 = own_status($v)->{pool};
    cmp_ok($a3->{outage_seconds}, '>=', $a2->{outage_seconds},
           'and the new worker\'s outage adds to them');
    is(own_status($v)->{workers}, 1, 'one worker: the killed one is not summed');
    $v->stop;
}

###########################################################################
# nginx -t

my $u = Corelog::Test->new(pg => 0);
my $route = Corelog::Test::core_log_server();
my $pg = 'corelog_postgres "host=127.0.0.1 port=1 dbname=corelog";';

$u->write_conf("$pg server { listen 127.0.0.1:%%PORT%%; "
               . "location = /status { corelog_status; } }",
               no_postgres => 1);
my ($rc, $out) = $u->nginx_test_conf;
isnt($rc, 0, 'corelog_status without a zone: refused');
like($out, qr/\[emerg\].*corelog: location "\/status" has "corelog_status", which needs "corelog_status_zone" at the http level/,
     'corelog_status without a zone: the reason');

$u->write_conf("$pg corelog_status_zone 16k;", no_postgres => 1);
($rc, $out) = $u->nginx_test_conf;
isnt($rc, 0, 'a zone too small: refused');
like($out, qr/\[emerg\].*corelog: "corelog_status_zone" 16k is too small: the status needs at least \d+k/,
     'a zone too small: the size it needs');

$u->write_conf("$pg corelog_status_zone 256k; corelog_status_zone 256k;",
               no_postgres => 1);
($rc, $out) = $u->nginx_test_conf;
like($out, qr/"corelog_status_zone" directive is duplicate/,
     'a second zone: refused');

$u->write_conf("$pg corelog_status_zone big;", no_postgres => 1);
($rc, $out) = $u->nginx_test_conf;
like($out, qr/corelog: invalid "corelog_status_zone" size "big"/,
     'a size that is not one: refused');

done_testing;
