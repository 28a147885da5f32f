#!/usr/bin/perl

# Bounded cost per request: the shipped client_max_body_size fits the
# largest body each route accepts (and not much more); a body's JSON is
# bounded (values, depth) before jansson sees it; a write that waits for
# PostgreSQL holds its row's values, not its body or its parsed tree, so
# that writes with the largest bodies, queued behind a table lock, keep a
# worker's memory within the bound docs/operations.md states (Sizing).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use DBI;
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;
use Corelog::Bodies;

# docs/operations.md (Sizing): a queued write holds at most 16 KB besides
# its row's values.
my $PER_WRITE_KB = 16;

my $t = Corelog::Test->new;

# the shipped configuration, with one connection and small statements, so
# that most writes wait in the queue rather than in a statement
$t->write_shipped_conf(workers => 1);
my $conf = $t->nginx_conf;
my ($limit) = $conf =~ /^\s*client_max_body_size\s+(\d+)k;/m
    or die 'no client_max_body_size NNNk in conf/nginx.conf';
$limit *= 1024;
$conf =~ s/corelog_connections \d+;/corelog_connections 1;/ or die;
$conf =~ s/corelog_batch_max \d+;/corelog_batch_max 10;/ or die;
$conf =~ s/corelog_query_timeout \w+;/corelog_query_timeout 60s;/ or die;
open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
print $fh $conf;
close $fh;
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom', project => 'proj');
my $ch = $t->make_channel($acc);
my $s = $t->seed_corelog($acc);
my $g = $t->make_log_group($acc, 'proj');
my $st = $t->make_log_stream($g);

my %bearer = (Authorization => "Bearer $tok",
              'Content-Type' => 'application/json');

sub post_channel {
    return $t->http(POST => '/api/v1/log/create', headers => \%bearer,
                    body => $_[0]);
}

my $channel_max = Corelog::Bodies::channel_max($ch);

subtest 'the shipped body limit fits the largest valid bodies' => sub {
    cmp_ok(length $channel_max, '<=', $limit,
           'the largest channel log fits client_max_body_size');
    cmp_ok($limit, '<=', 2 * length $channel_max,
           'and client_max_body_size is at most twice its size');

    my $r = post_channel($channel_max);
    is($r->{status}, 202, 'the largest channel log: 202') or diag $r->{body};
    my ($body, $tags, $refs) = $t->dbh->selectrow_array(
        'SELECT length(body), cardinality(tags),
                (SELECT count(*) FROM jsonb_object_keys(custom_references))
           FROM corelog.channel_logs ORDER BY created_at DESC LIMIT 1');
    is_deeply([$body, $tags, $refs], [16384, 32, 32],
              'stored whole: the body, 32 tags, 32 custom references');

    my ($rq, $rs) = $t->make_request_response($s->{traffic_source_id});
    $r = $t->http(POST => "/core-log/$s->{traffic_source_id}",
        headers => \%bearer,
        body => Corelog::Bodies::core_log_max(
            core_pathname_id => $s->{core_pathname_id},
            request_id => $rq, response_id => $rs));
    is($r->{status}, 201, 'the largest core log: 201') or diag $r->{body};

    $r = $t->http(POST => '/v1/logtanks',
        headers => { 'X-Auth-Token' => $tok,
                     'Content-Type' => 'application/json' },
        body => Corelog::Bodies::logtank_max(log_group_id => $g,
                                             log_stream_id => $st));
    is($r->{status}, 201, 'the largest logtank: 201') or diag $r->{body};

    $r = post_channel(Corelog::Bodies::pad($channel_max, $limit + 1));
    is($r->{status}, 413, 'one byte over the limit: 413');
};

# bodies within the limit whose shape would cost a parser dearly

my @shapes = (
    ['an array of zeros', '{"a":[' . join(',', (0) x ($limit / 2 - 8)) . ']}',
        qr/too many JSON values \(at most 1024\)/],
    ['many keys', '{' . join(',', map { qq("k$_":1) } 1 .. 20000) . '}',
        qr/too many JSON values/],
    ['many empty keys', '{' . join(',', ('"":0') x 40000) . '}',
        qr/too many JSON values/],
    ['deep nesting', '{"a":' . ('[' x 5000) . (']' x 5000) . '}',
        qr/nested too deeply \(at most 16 levels\)/],
);

for my $case (@shapes) {
    my ($name, $body, $re) = @$case;
    subtest "$name: 400 before parsing" => sub {
        cmp_ok(length $body, '<=', $limit, 'within the body limit');
        my $r = post_channel($body);
        is($r->{status}, 400, 'status 400');
        like($r->{json}{message} // '', $re, 'says why');
    };
}

subtest 'the value bound is 1024' => sub {
    # '{', 3 ':', 2 ',', '[' and n - 1 ',': n + 6 values
    my $b = sub {
        '{"channel_id":"' . $ch . '","label":"x","extra":['
        . join(',', (7) x $_[0]) . ']}';
    };
    my $r = post_channel($b->(1018));
    is($r->{status}, 202, '1024 values: 202') or diag $r->{body};
    $r = post_channel($b->(1019));
    is($r->{status}, 400, '1025 values: 400');
    like($r->{json}{message} // '', qr/too many JSON values/, 'says why');
};

subtest 'the depth bound is 16' => sub {
    my $b = sub {
        '{"channel_id":"' . $ch . '","label":"x","extra":'
        . ('[' x ($_[0] - 1)) . (']' x ($_[0] - 1)) . '}';
    };
    my $r = post_channel($b->(16));
    is($r->{status}, 202, '16 levels: 202') or diag $r->{body};
    $r = post_channel($b->(17));
    is($r->{status}, 400, '17 levels: 400');
    like($r->{json}{message} // '', qr/nested too deeply/, 'says why');
};

# writes with the largest bodies, padded to the limit with ignored
# fields, wait behind a lock: the worker holds their values only

sub rss_kb {
    my ($pid) = $t->worker_pids;
    open my $fh, '<', "/proc/$pid/status" or die "no worker: $!";
    while (<$fh>) {
        return $1 if /^VmRSS:\s+(\d+)/;
    }
    die 'no VmRSS';
}

subtest 'queued writes hold their values, not their bodies' => sub {
    my $N = 100;
    my $body = Corelog::Bodies::pad($channel_max, $limit - 64);

    # the row this body makes, as the statement carries it
    my $row = 0;
    {
        my $d = JSON::PP->new->utf8->decode($channel_max);
        use bytes ();
        $row += bytes::length(JSON::PP->new->utf8->encode($d->{$_}))
            for qw(reference label body);
        $row += bytes::length(JSON::PP->new->utf8->encode(
            { map { $_ => 1 } @{$d->{tags}} }));
        $row += bytes::length(JSON::PP->new->utf8->encode(
            $d->{custom_references}));
        $row = int($row / 1024) + 1;
    }

    for (1 .. 10) {
        my $r = post_channel($body);
        die "warm-up: $r->{status}" unless $r->{status} == 202;
    }
    sleep 0.3;
    my $base = rss_kb();

    my $lock = DBI->connect('dbi:Pg:dbname=corelog;host=127.0.0.1;port='
                            . $t->pg_port, 'postgres', '',
                            { AutoCommit => 0, RaiseError => 1,
                              PrintError => 0 });
    $lock->do('LOCK TABLE corelog.channel_logs IN ACCESS EXCLUSIVE MODE');

    my @socks = map { $t->http_start(POST => '/api/v1/log/create',
                                     headers => \%bearer, body => $body) }
                1 .. $N;

    # every body read: each write is queued or in the blocked statement
    my $waiting;
    for (1 .. 100) {
        ($waiting) = $t->dbh->selectrow_array(
            q{SELECT count(*) FROM pg_stat_activity
               WHERE application_name = 'nginx-corelog'
                 AND wait_event_type = 'Lock'});
        last if $waiting;
        sleep 0.05;
    }
    ok($waiting, 'a statement waits for the lock');
    sleep 1;

    my $grown = rss_kb() - $base;

    # AddressSanitizer keeps freed memory aside (up to 256 MB) to catch its
    # use after free: the bound holds for the allocator nginx runs with

    # the bound of docs/operations.md: per write its values and 16 KB; in
    # flight, a statement's values twice (the module's buffer and libpq's)
    my $bound = $N * ($row + $PER_WRITE_KB) + 2 * 10 * $row + 2048;
    SKIP: {
        skip 'the worker runs under AddressSanitizer (freed memory is '
             . 'quarantined)', 1 if Corelog::Test::asan();
        cmp_ok($grown, '<=', $bound,
               "$N queued writes of ${row} KB rows: the worker grew by at "
               . "most ${bound} KB") or diag "grown by $grown KB";
    }
    diag "worker RSS grew by $grown KB for $N writes (bound $bound KB)";

    $lock->rollback;
    $lock->disconnect;

    my %status;
    $status{ $t->http_finish($_, timeout => 60)->{status} }++ for @socks;
    is_deeply(\%status, { 202 => $N }, 'then every write: 202');
};

# a statement carries at most 1 MB of values, whatever corelog_batch_max

subtest 'a statement takes rows up to 1 MB of values' => sub {
    $t->stop;
    $conf =~ s/corelog_batch_max \d+;/corelog_batch_max 100;/ or die;
    open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
    $t->run;

    my $N = 30;
    my $lock = DBI->connect('dbi:Pg:dbname=corelog;host=127.0.0.1;port='
                            . $t->pg_port, 'postgres', '',
                            { AutoCommit => 0, RaiseError => 1,
                              PrintError => 0 });
    $lock->do('LOCK TABLE corelog.channel_logs IN ACCESS EXCLUSIVE MODE');
    $t->dbh->do('SELECT pg_stat_statements_reset()');

    my @socks = map { $t->http_start(POST => '/api/v1/log/create',
                                     headers => \%bearer,
                                     body => $channel_max) } 1 .. $N;
    sleep 1;
    $lock->rollback;
    $lock->disconnect;

    my %status;
    $status{ $t->http_finish($_, timeout => 60)->{status} }++ for @socks;
    is_deeply(\%status, { 202 => $N }, "$N writes of the largest rows: 202");

    my ($calls, $rows) = $t->dbh->selectrow_array(
        q{SELECT sum(calls), sum(rows) FROM pg_stat_statements
           WHERE query LIKE 'WITH input AS%'});
    is($rows, $N, "$N rows");
    # 117 KB rows: 8 fit in 1 MB, the ninth does not
    cmp_ok($rows / $calls, '<=', 8.5,
           "at most 8 rows per statement on average ($calls statements)");
};

$t->done;
done_testing;
