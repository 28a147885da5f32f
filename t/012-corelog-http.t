#!/usr/bin/perl

# HTTP-level answers of the shipped configuration: 405 + Allow before
# anything else, 415, 413, unknown routes and malformed requests: every
# error is JSON in the route's shape.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf;
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};
my $path = "/core-log/$ts";

my $valid = encode_json({ status => 200, method => 'GET', elapsedTime => 1,
                          corePathnameId => $s->{core_pathname_id},
                          requestId => $s->{request_id},
                          responseId => $s->{response_id} });

sub count {
    return $t->dbh->selectrow_array('SELECT count(*) FROM corelog.core_logs');
}

sub is_json_error {
    my ($r, $status, $name) = @_;
    is($r->{status}, $status, "status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         'Content-Type application/json');
    is($r->{json}{name}, $name, "name $name") or diag explain $r;
    ok(length($r->{json}{message} // ''), 'a message');
}

# 405 for every other method, decided before auth, body and Content-Type

for my $m (qw(GET PUT PATCH DELETE OPTIONS)) {
    subtest "$m: 405" => sub {
        my $r = $t->http($m => $path,
            headers => { 'Content-Type' => 'text/plain' }, body => 'x');
        is_json_error($r, 405, 'MethodNotAllowed');
        is($r->{headers}{allow}, 'POST', 'Allow: POST');
    };
}

subtest 'HEAD: 405 without a body' => sub {
    my $r = $t->http(HEAD => $path);
    is($r->{status}, 405, 'status 405');
    is($r->{headers}{allow}, 'POST', 'Allow: POST');
    is($r->{body}, '', 'no body');
};

subtest 'GET with a valid token: still 405' => sub {
    my $r = $t->http(GET => $path,
        headers => { 'Authorization' => "Bearer $tok" });
    is_json_error($r, 405, 'MethodNotAllowed');
};

# 415: Content-Type must be JSON, parameters allowed

for my $ct (undef, 'text/plain', 'application/jsonx', 'application/xml',
            'multipart/form-data; boundary=x', 'json')
{
    subtest 'Content-Type ' . ($ct // 'missing') . ': 415' => sub {
        my $before = count();
        my $r = $t->http(POST => $path,
            headers => { 'Authorization' => "Bearer $tok",
                         defined $ct ? ('Content-Type' => $ct) : () },
            body => $valid);
        is_json_error($r, 415, 'UnsupportedMediaType');
        is(count(), $before, 'nothing stored');
    };
}

subtest 'a bad token and a bad Content-Type: the auth answer first' => sub {
    my $r = $t->http(POST => $path,
        headers => { 'Authorization' => 'Bearer nope',
                     'Content-Type' => 'text/plain' }, body => 'x');
    is_json_error($r, 401, 'Unauthorized');
};

for my $ct ('application/json; charset=utf-8', 'APPLICATION/JSON',
            'application/json ;charset=UTF-8')
{
    subtest "Content-Type $ct accepted" => sub {
        my ($rq, $rs) = $t->make_request_response($ts);
        my $b = encode_json({ status => 201, method => 'POST',
                              elapsedTime => 2,
                              corePathnameId => $s->{core_pathname_id},
                              requestId => $rq, responseId => $rs });
        my $r = $t->http(POST => $path,
            headers => { 'Authorization' => "Bearer $tok",
                         'Content-Type' => $ct }, body => $b);
        is($r->{status}, 201, 'status 201');
    };
}

# 413: over client_max_body_size, by Content-Length and chunked

subtest '413 by Content-Length' => sub {
    my $before = count();
    my $r = $t->http(POST => $path,
        headers => { 'Authorization' => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => '{"x":"' . ('a' x (1024 * 1024 + 10)) . '"}');
    is_json_error($r, 413, 'PayloadTooLarge');
    is(count(), $before, 'nothing stored');
};

subtest '413 chunked' => sub {
    my $chunk = 'a' x 65536;
    my $raw = "POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $tok\r\nContent-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . sprintf("%x\r\n%s\r\n", 1, '{')
        . join('', map { sprintf("%x\r\n%s\r\n", length $chunk, $chunk) }
                   1 .. 20)
        . "0\r\n\r\n";
    my $r = $t->http(POST => $path, raw => $raw);
    is_json_error($r, 413, 'PayloadTooLarge');
};

subtest 'a chunked body is read' => sub {
    my ($rq, $rs) = $t->make_request_response($ts);
    my $b = encode_json({ status => 200, method => 'GET', elapsedTime => 1,
                          corePathnameId => $s->{core_pathname_id},
                          requestId => $rq, responseId => $rs });
    my $raw = "POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $tok\r\nContent-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
                   substr($b, 0, 10), substr($b, 10))
        . "0\r\n\r\n";
    my $r = $t->http(POST => $path, raw => $raw);
    is($r->{status}, 201, 'status 201');
};

# routes and requests that nginx answers itself

subtest 'unknown route: 404 JSON' => sub {
    my $r = $t->http(GET => '/nothing/here');
    is_json_error($r, 404, 'NotFound');
};

subtest 'a path under /core-log with more segments: 404 JSON' => sub {
    my $r = $t->http(POST => "$path/extra",
        headers => { 'Authorization' => "Bearer $tok",
                     'Content-Type' => 'application/json' }, body => '{}');
    is_json_error($r, 404, 'NotFound');
};

subtest 'malformed request line: 400 JSON' => sub {
    my $r = $t->http(GET => '/', raw => "NOT A REQUEST\r\n\r\n");
    is_json_error($r, 400, 'BadRequest');
};

subtest 'malformed header: 400 JSON' => sub {
    my $r = $t->http(POST => $path,
        raw => "POST $path HTTP/1.1\r\nHost: localhost\r\n"
             . "Content-Length: abc\r\n\r\n");
    is_json_error($r, 400, 'BadRequest');
};

subtest 'the internal token location is not reachable' => sub {
    my $r = $t->http(GET => '/_corelog/auth/bearer',
        headers => { 'Authorization' => "Bearer $tok" });
    is_json_error($r, 404, 'NotFound');
};

$t->done;
done_testing;
