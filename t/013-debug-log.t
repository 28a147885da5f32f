#!/usr/bin/perl

# The debug log follows one request: with nginx and the module built
# --with-debug (make debug-build: .build/debug/) and `error_log ... debug`,
# one POST per route logs each step of its path on its own connection
# ("*N corelog ..."), in order: request entered, auth verdict, body parsed,
# queued, taken into a statement, statement done, answered.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $skip = Corelog::Test::use_debug_build();
plan skip_all => $skip if $skip;

my $t = Corelog::Test->new;
$t->write_shipped_conf(error_log_level => 'debug');
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-a');
my $s = $t->seed_corelog($acc);
my ($rq, $rs) = $t->make_request_response($s->{traffic_source_id});
my $ch = $t->make_channel($acc, 'payments');
my $g = $t->make_log_group($acc, 'proj-a');
my $st = $t->make_log_stream($g);

# [ route, URI, auth header => token, body, status ]
my @routes = (
    [ core_log => "/core-log/$s->{traffic_source_id}",
      Authorization => "Bearer $tok",
      { status => 200, method => 'GET', elapsedTime => 1,
        corePathnameId => $s->{core_pathname_id},
        requestId => $rq, responseId => $rs }, 201 ],
    [ channel_log => '/api/v1/log/create',
      Authorization => "Bearer $tok",
      { channel_id => $ch, label => 'debug log' }, 202 ],
    [ logtank => '/v1/logtanks',
      'X-Auth-Token' => $tok,
      { logtank => { resource_type => 'LISTENER', resource_id => "res-$$",
                     log_group_id => $g, log_stream_id => $st } }, 201 ],
);

for my $route (@routes) {
    my ($name, $uri, $auth, $token, $body, $status) = @$route;
    my $r = $t->http(POST => $uri,
        headers => { $auth => $token, 'Content-Type' => 'application/json' },
        body => encode_json($body));
    is($r->{status}, $status, "$name: $status") or diag($r->{body});
}

# every line is written once nginx has stopped
$t->stop;
my $log = $t->error_log;

for my $route (@routes) {
    my ($name, $uri, $status) = @$route[0, 1, 5];

    subtest "$name: each step on the request's connection" => sub {
        # the connection, from nginx's own debug line
        my ($conn) = $log =~ /\*(\d+) http request line: "POST \Q$uri\E /
            or return fail("no \"http request line\" for POST $uri");
        my @lines = $log =~ /^.*\[debug\] \d+#\d+: \*$conn corelog (.*)$/mg;

        my @steps = (
            [ 'request entered', qr/^request entered: route "[^"]+"/ ],
            [ 'auth verdict',    qr/^auth verdict: 2\d\d\b/ ],
            [ 'body parsed',     qr/^body parsed: route "[^"]+"/ ],
            [ 'queued',          qr/^queued: \S/ ],
            [ 'taken into a statement', qr/^taken into statement "[^"]+"/ ],
            [ 'statement done',  qr/^statement done: \S/ ],
            [ 'answered',        qr/^answered: $status\b/ ],
        );

        # each step after the one before it
        my ($from, $ok, %at) = (0, 1);
        for my $step (@steps) {
            my ($what, $re) = @$step;
            my ($i) = grep { $lines[$_] =~ $re } $from .. $#lines;
            $ok = 0 unless ok(defined $i, "*$conn: $what");
            ($from, $at{$what}) = ($i + 1, $i) if defined $i;
        }

        # after the body: the route's one op (before it, on the first
        # request, the auth subrequest's token lookup may have been one)
        my @op = grep { /^(?:taken into statement|statement done)\b/ }
                 @lines[($at{'body parsed'} // 0) .. $#lines];
        is(scalar(@op), 2, 'one op taken into a statement and done');
        like($op[0] // '', qr/^taken into statement "\Q$name\E/,
             "the statement is ${name}'s");

        my @routes =
            map { /^(?:request entered|body parsed): route "([^"]*)"/ } @lines;
        is($routes[1], $routes[0], 'the same route entered and parsed')
            if @routes == 2;

        diag("*$conn corelog lines, in order:\n",
             map { "  $_\n" } @lines) unless $ok;
    };
}

$t->done;
done_testing;
