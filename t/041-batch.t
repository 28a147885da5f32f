#!/usr/bin/perl

# Group commit: with one connection, concurrent requests share statements
# (fewer statements than requests), and each request still gets its own
# answer: 201, 404 or 409, row by row.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF2' . Corelog::Test::core_log_server());
    corelog_connections 1;
    corelog_batch_max 50;

EOF2
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $uuid = Corelog::Test::uuid();

# warm the token cache
my ($wrq, $wrs) = $t->make_request_response($ts);
my $used = { requestId => $wrq, responseId => $wrs };

sub req {
    my (%b) = @_;
    return [POST => "/core-log/" . (delete $b{ts} // $ts),
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => $s->{core_pathname_id},
                              %b })];
}

is($t->http(@{ req(%$used) })->{status}, 201, 'warm-up');
$t->dbh->do('SELECT pg_stat_statements_reset()');

# 120 requests: every fourth is a 404, every fourth+1 a 409, the rest 201

my (@reqs, @want);
for my $i (0 .. 119) {
    my ($rq, $rs) = $t->make_request_response($ts);
    if ($i % 4 == 0) {
        push @reqs, req(requestId => $uuid, responseId => $rs);
        push @want, [404, 'Request not found'];
    } elsif ($i % 4 == 1) {
        push @reqs, req(%$used);
        push @want, [409, undef];
    } elsif ($i % 8 == 2) {
        push @reqs, req(ts => $uuid, requestId => $rq, responseId => $rs);
        push @want, [404, 'Traffic source not found'];
    } else {
        push @reqs, req(requestId => $rq, responseId => $rs);
        push @want, [201, undef];
    }
}

my $res = $t->http_many(\@reqs, timeout => 60);

my $wrong = 0;
for my $i (0 .. $#want) {
    my ($status, $msg) = @{ $want[$i] };
    next if $res->[$i]{status} == $status
            && (!defined $msg || ($res->[$i]{json}{message} // '') eq $msg);
    $wrong++;
    diag "request $i: want $status, got $res->[$i]{status}"
        if $wrong < 5;
}
is($wrong, 0, 'each request got its own answer');

my $created = grep { $_->[0] == 201 } @want;
my ($rows) = $t->dbh->selectrow_array(
    'SELECT count(*) FROM corelog.core_logs');
is($rows, $created + 1, 'only the 201s are stored');

my ($calls) = $t->dbh->selectrow_array(q{
    SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
     WHERE query LIKE 'WITH input AS%'});
cmp_ok($calls, '<', 120, "rows of many requests share a statement ($calls statements)");
cmp_ok($calls, '>=', 3, 'no statement holds more than corelog_batch_max rows');

$t->done;
done_testing;
