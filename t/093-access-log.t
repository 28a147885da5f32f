#!/usr/bin/perl

# The access-log variables in the shipped JSON log_format (conf/nginx.conf):
# every request of a known mix (201, 202, 400, 401, 404, 405, 409, 503 with
# PostgreSQL stopped, a URI of no route) has a line whose $corelog_* values
# are checked against the answer and the database: $corelog_id is the id
# of the stored row, $corelog_account the token's account, $corelog_route
# the location's API, $corelog_error the code of the error body ("" for a
# success), and the statement's times and rows are there exactly when the
# write went out.  $corelog_batch_rows is checked against PostgreSQL: rows
# inserted by one statement share its transaction (xmin).  Then, with one
# connection and a table lock, a held statement and 30 writes queued behind
# it: the held one's $corelog_db_time and the others' $corelog_queue_time
# are the hold, and the 30 went in one statement of 30 rows.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf;
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-1');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $ch = $t->make_channel($acc);
my $group = $t->make_log_group($acc, 'proj-1');
my $stream = $t->make_log_stream($group);

my $TIME = qr/^\d+\.\d{3}$/;

my %bearer = (Authorization => "Bearer $tok",
              'Content-Type' => 'application/json');
my %xauth = ('X-Auth-Token' => $tok, 'Content-Type' => 'application/json');

my $n = 0;

sub core_log {
    my (%o) = @_;
    my ($rq, $rs) = $o{pair} ? @{$o{pair}} : $t->make_request_response($ts);
    return (POST => '/core-log/' . ($o{ts} // $ts),
            headers => { %bearer, %{$o{headers} // {}} },
            body => $o{body} // encode_json({
                status => 200, method => 'GET', elapsedTime => 1.5,
                corePathnameId => $s->{core_pathname_id},
                requestId => $rq, responseId => $rs }),
            pair => [$rq, $rs]);
}

sub channel_log {
    my (%o) = @_;
    return (POST => '/api/v1/log/create',
            headers => { %bearer, %{$o{headers} // {}} },
            body => $o{body} // encode_json({
                channel_id => $o{channel} // $ch,
                label => $o{label} // 'l' . ++$n }));
}

sub logtank {
    my (%o) = @_;
    return (POST => '/v1/logtanks',
            headers => { %xauth, %{$o{headers} // {}} },
            body => $o{body} // encode_json({ logtank => {
                resource_type => 'LISTENER', resource_id => 'res-' . ++$n,
                log_group_id => $o{group} // $group,
                log_stream_id => $stream } }));
}

# what the line of a request must say: route (undef: none), error (""
# for none), account (1: the token's; 0: none), created (1: an id, that of
# the stored row), timed (1: the statement's values; 0: none; undef:
# either).  A value not found is "" in a JSON line (escape=json), "-" in a
# plain one.

my @sent;

sub send_req {
    my ($name, $exp, $method, $uri, %o) = @_;
    my $r = $t->http($method, $uri, %o);
    is($r->{status}, $exp->{status}, "$name: answered $exp->{status}")
        or diag $r->{body};
    push @sent, { name => $name, exp => $exp, r => $r, body => $o{body},
                  pair => $o{pair} };
    return $r;
}

sub ok_exp {
    my ($route, $status) = @_;
    return { route => $route, status => $status, error => '', account => 1,
             created => 1, timed => 1 };
}

sub err_exp {
    my ($route, $status, $error, %o) = @_;
    return { route => $route, status => $status, error => $error,
             account => $o{account} // 1, created => 0,
             timed => exists $o{timed} ? $o{timed} : 0 };
}

###########################################################################
# part 1: the shipped configuration, one request at a time

send_req('core log', ok_exp(core_log => 201), core_log());
my $pair = $sent[-1]{pair};
send_req('core log 2', ok_exp(core_log => 201), core_log());
send_req('core log, its pair used', err_exp(core_log => 409, 'Conflict',
                                            timed => 1),
         core_log(pair => $pair));
send_req('core log, unknown traffic source',
         err_exp(core_log => 404, 'NotFound', timed => 1),
         core_log(ts => Corelog::Test::uuid()));
send_req('core log, bad JSON', err_exp(core_log => 400, 'BadRequest'),
         core_log(body => '{"status":'));
send_req('core log, no token',
         err_exp(core_log => 401, 'Unauthorized', account => 0),
         core_log(headers => { Authorization => undef }));

send_req('channel log', ok_exp(channel_log => 202), channel_log());
send_req('channel log 2', ok_exp(channel_log => 202), channel_log());
send_req('channel log, unknown channel',
         err_exp(channel_log => 404, 'NotFound', timed => 1),
         channel_log(channel => Corelog::Test::uuid()));
send_req('channel log, bad token',
         err_exp(channel_log => 401, 'Unauthorized', account => 0),
         channel_log(headers => { Authorization => 'Bearer nope' }));
send_req('channel log, bad JSON', err_exp(channel_log => 400, 'BadRequest'),
         channel_log(body => '[1,'));
send_req('channel log, GET',
         err_exp(channel_log => 405, 'MethodNotAllowed', account => 0),
         GET => '/api/v1/log/create');

send_req('logtank', ok_exp(logtank => 201), logtank());
send_req('logtank 2', ok_exp(logtank => 201), logtank());
send_req('logtank, unknown log group',
         err_exp(logtank => 404, 'CLG.0404', timed => 1),
         logtank(group => Corelog::Test::uuid()));
send_req('logtank, bad JSON', err_exp(logtank => 400, 'CLG.0400'),
         logtank(body => '{'));
send_req('logtank, no token',
         err_exp(logtank => 401, 'CLG.0401', account => 0),
         logtank(headers => { 'X-Auth-Token' => undef }));

send_req('no route', err_exp(undef, 404, 'NotFound', account => 0),
         GET => '/nothing');

# a burst: 30 channel logs at once (their lines, in any order, follow)

my $before = @sent;
my $wave = Corelog::Test::channel_wave($tok, $ch, 30);
my $burst = $t->http_many($wave);
is(scalar(grep { ($_->{status} // 0) == 202 } @$burst), 30,
   'burst: 30 answered 202');

# PostgreSQL stopped: 503 in each route's shape (the token is cached)

$t->pg_stop;
sleep 0.5;

send_req('channel log, PostgreSQL stopped',
         err_exp(channel_log => 503, 'ServiceUnavailable', timed => undef),
         channel_log());
send_req('core log, PostgreSQL stopped',
         err_exp(core_log => 503, 'ServiceUnavailable', timed => undef),
         core_log(pair => [Corelog::Test::uuid(), Corelog::Test::uuid()]));
send_req('logtank, PostgreSQL stopped',
         err_exp(logtank => 503, 'CLG.0503', timed => undef), logtank());

$t->stop;       # writes out the log buffer
$t->pg_start;

my @lines = map { decode_json($_) } grep { length } split /\n/,
            $t->access_log;

is(scalar @lines, @sent + 30, 'a line for each request')
    or diag $t->access_log;

my @seq = (@lines[0 .. $before - 1], @lines[$before + 30 .. $#lines]);
my @wave_lines = @lines[$before .. $before + 29];

my $dbh = $t->dbh;

# the table of each route's rows, and the rows of one transaction there
my %TABLE = (core_log => 'corelog.core_logs',
             channel_log => 'corelog.channel_logs',
             logtank => 'corelog.logtanks');

sub statement_rows {
    my ($route, $id) = @_;
    return scalar $dbh->selectrow_array(
        "SELECT count(*) FROM $TABLE{$route}
          WHERE xmin = (SELECT xmin FROM $TABLE{$route} WHERE id = ?)",
        undef, $id);
}

sub check_line {
    my ($name, $l, $exp) = @_;

    is($l->{status}, $exp->{status}, "$name: status");
    is($l->{route}, $exp->{route} // '', "$name: \$corelog_route");
    is($l->{error}, $exp->{error}, "$name: \$corelog_error");
    is($l->{account}, $exp->{account} ? $acc : '',
       "$name: \$corelog_account");

    if ($exp->{created}) {
        like($l->{id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/,
             "$name: \$corelog_id, a UUIDv7");
    } else {
        is($l->{id}, '', "$name: no \$corelog_id");
    }

    my $timed = $exp->{timed} // (($l->{batch_rows} // '') ne '');

    if ($timed) {
        like($l->{queue_time}, $TIME, "$name: \$corelog_queue_time");
        like($l->{batch_rows}, qr/^[1-9]\d*$/, "$name: \$corelog_batch_rows");
        if ($exp->{status} < 500) {
            like($l->{db_time}, $TIME, "$name: \$corelog_db_time");
            cmp_ok($l->{queue_time} + $l->{db_time}, '<=',
                   $l->{request_time} + 0.002,
                   "$name: queue and db times within the request's");
        }
    } else {
        is_deeply([@$l{qw(queue_time db_time batch_rows)}], ['', '', ''],
                  "$name: no statement");
    }
}

for my $i (0 .. $#sent) {
    my ($e, $l) = ($sent[$i], $seq[$i] // {});
    my $name = $e->{name};

    subtest $name => sub {
        check_line($name, $l, $e->{exp});
        return unless $e->{exp}{created};

        my $route = $e->{exp}{route};
        my $id = $l->{id} // '';

        # only a logtank's answer carries a request id (X-Request-Id):
        # none is made for the others (nginx's $request_id costs a random
        # number and a getpid() per request)
        is($l->{request_id}, '', 'no request id for a route that sends none')
            if $route ne 'logtank';

        if ($route eq 'core_log') {
            is($id, $e->{r}{json}{id}, 'the id of the answer');
            my ($rq) = $dbh->selectrow_array(
                'SELECT request_id::text FROM corelog.core_logs c
                   JOIN corelog.traffic_sources t
                     ON t.id = c.traffic_source_id
                  WHERE c.id = ? AND t.account_id = ?', undef, $id, $acc);
            is($rq, decode_json($e->{body})->{requestId},
               'the stored row, of the account');

        } elsif ($route eq 'channel_log') {
            my ($label) = $dbh->selectrow_array(
                'SELECT label FROM corelog.channel_logs l
                   JOIN corelog.channels c ON c.id = l.channel_id
                  WHERE l.id = ? AND c.account_id = ?', undef, $id, $acc);
            is($label, decode_json($e->{body})->{label},
               'the stored row, of the account');

        } else {
            is($id, $e->{r}{json}{logtank}{id}, 'the id of the answer');
            is($l->{request_id}, $e->{r}{json}{request_id},
               'the request id of the answer');
            my ($res) = $dbh->selectrow_array(
                'SELECT resource_id FROM corelog.logtanks
                  WHERE id = ? AND account_id = ?', undef, $id, $acc);
            is($res, decode_json($e->{body})->{logtank}{resource_id},
               'the stored row, of the account');
        }

        is($l->{batch_rows}, statement_rows($route, $id),
           '$corelog_batch_rows: the rows of its transaction');
    };
}

subtest 'burst: each line is one of its rows' => sub {
    my %labels = map { (Corelog::Test::label_of($_) => 1) } @$wave;
    my (%seen, $batched);

    for my $l (@wave_lines) {
        check_line('burst', $l, ok_exp(channel_log => 202));
        my ($label) = $dbh->selectrow_array(
            'SELECT label FROM corelog.channel_logs WHERE id = ?', undef,
            $l->{id});
        ok($label && $labels{$label} && !$seen{$label}++,
           "burst: $l->{id} is the row of one request of it");
        is($l->{batch_rows}, statement_rows(channel_log => $l->{id}),
           'burst: $corelog_batch_rows: the rows of its transaction');
    }

    is(scalar keys %seen, 30, 'burst: 30 rows');
};

###########################################################################
# part 2: one connection; a statement held on a lock, 30 writes behind it

my $shipped = do {
    local (@ARGV, $/) = "$Corelog::Test::ROOT/conf/nginx.conf";
    <>;
};
my ($format) = $shipped =~ /^([ \t]*log_format\s+corelog\b.*?';)[ \t]*$/ms;
ok($format, 'the shipped log_format') or BAIL_OUT('no log_format corelog');

$t->write_conf(<<"EOF" . Corelog::Test::routes_server());
    corelog_connections 1;
    corelog_batch_max 100;
    corelog_query_timeout 60s;
    corelog_token_cache 1024 600s;

$format
    access_log %%DIR%%/held.log corelog;

    log_format plain '\$status|\$corelog_route|\$corelog_account|\$corelog_id|'
                     '\$corelog_error|\$corelog_queue_time|\$corelog_db_time|'
                     '\$corelog_batch_rows';
    access_log %%DIR%%/plain.log plain;

EOF
$t->run;

my $warm = $t->http(channel_log(label => 'warm'));
is($warm->{status}, 202, 'held: warm-up 202 (the token is cached)');

my $lock = $t->lock_table('corelog.channel_logs');
my $held = $t->http_start(channel_log(label => 'held'));
ok($t->wait_lock_waiters, 'held: its statement waits for the lock');

my @queued = map { $t->http_start(channel_log(label => "q$_")) } 1 .. 30;
sleep 0.6;
$lock->rollback;
$lock->disconnect;

is($t->http_finish($held, timeout => 30)->{status}, 202, 'held: 202');
is(scalar(grep { $t->http_finish($_, timeout => 30)->{status} == 202 }
          @queued), 30, 'held: the 30 queued behind it, 202');

my $bad = $t->http(channel_log(body => '{'));
is($bad->{status}, 400, 'held: a 400 after them');

$t->stop;

# the plain format: a value not found is "-", an empty one is empty

my $T = qr/\d+\.\d{3}/;
my @plain = split /\n/, Corelog::Test::_slurp($t->dir . '/plain.log') // '';
is(scalar @plain, 33, 'plain: a line for each request');
like($plain[0] // '',
     qr/^202\|channel_log\|\Q$acc\E\|[0-9a-f-]{36}\|\|$T\|$T\|1$/,
     'plain: a 202, every value; $corelog_error empty');
is($plain[-1], "400|channel_log|$acc|-|BadRequest|-|-|-",
   'plain: a 400, "-" for what does not apply');

my %by_label;
for my $l (map { decode_json($_) } grep { length } split /\n/,
           Corelog::Test::_slurp($t->dir . '/held.log') // '') {
    next unless $l->{id};
    my ($label) = $dbh->selectrow_array(
        'SELECT label FROM corelog.channel_logs WHERE id = ?', undef,
        $l->{id});
    $by_label{$label // ''} = $l;
}

my $h = $by_label{held} // {};
is($h->{batch_rows}, 1, 'held: a statement of its own');
cmp_ok($h->{db_time} // 0, '>=', 0.5, 'held: $corelog_db_time is the hold');
cmp_ok($h->{queue_time} // 9, '<', 0.5, 'held: it did not wait in the queue');

my @q = map { $by_label{"q$_"} // {} } 1 .. 30;
is(scalar(grep { ($_->{batch_rows} // '') eq '30' } @q), 30,
   'queued: all 30 went in one statement of 30 rows');
is(statement_rows(channel_log => $q[0]{id} // ''), 30,
   'queued: PostgreSQL has 30 rows of that statement');
is(scalar(grep { ($_->{queue_time} // 0) >= 0.3 } @q), 30,
   'queued: $corelog_queue_time is their wait behind the held statement');
is(scalar(grep { ($_->{db_time} // 9) < $h->{db_time} } @q), 30,
   'queued: their $corelog_db_time is their own statement\'s');
is(scalar(grep { ($_->{error} // '-') eq '' } @q), 30,
   'queued: $corelog_error empty');

$t->done;
done_testing;
