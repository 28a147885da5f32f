#!/usr/bin/perl

# The built-in token checker behind corelog_auth_request: Bearer and
# X-Auth-Token locations, expired and revoked tokens, the auth decision
# before the body, and the per-worker token cache.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF');
    corelog_token_cache 1024 2s;

    server {
        listen 127.0.0.1:%%PORT%%;

        error_page 400 404 405 413 500 502 503 504 /_corelog/error;

        location = /_corelog/error {
            internal;
            corelog_error core_log;
        }

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth/bearer;
            corelog_api core_log $ts;
        }

        location ~ ^/x/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth/x-auth-token;
            corelog_api core_log $ts;
        }

        location = /_auth/bearer {
            internal;
            corelog_token_check bearer;
        }

        location = /_auth/x-auth-token {
            internal;
            corelog_token_check x-auth-token;
        }
    }
EOF
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

sub body {
    my ($rq, $rs) = $t->make_request_response($ts);
    return encode_json({ status => 200, method => 'GET', elapsedTime => 1,
                         corePathnameId => $s->{core_pathname_id},
                         requestId => $rq, responseId => $rs });
}

sub post {
    my ($headers, $body, $prefix) = @_;
    return $t->http(POST => ($prefix // '') . "/core-log/$ts",
        headers => { 'Content-Type' => 'application/json', %$headers },
        body => $body // body());
}

sub count {
    return $t->dbh->selectrow_array('SELECT count(*) FROM corelog.core_logs');
}

sub token_queries {
    my ($n) = $t->dbh->selectrow_array(q{
        SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
         WHERE query LIKE '%corelog.tokens%' AND query NOT LIKE '%pg_stat%'});
    return $n;
}

is(post({ Authorization => "Bearer $tok" })->{status}, 201,
   'a valid bearer token: 201');
is(post({ Authorization => "bearer   $tok" })->{status}, 201,
   'the scheme in any case, spaces before the token');

# refusals: [name, headers, message pattern, WWW-Authenticate pattern]

my $expired = $t->make_token($acc, expires_in => '-1 second');
my $revoked = $t->make_token($acc, revoked => 1);

my @refused = (
    ['no Authorization', {}, qr/Missing bearer token/, qr/^Bearer realm=/],
    ['Basic credentials', { Authorization => 'Basic dXNlcjpwYXNz' },
        qr/Bearer <token>/, qr/invalid_token/],
    ['Bearer without a token', { Authorization => 'Bearer ' },
        qr/Bearer <token>/, qr/invalid_token/],
    ['an unknown token', { Authorization => 'Bearer clg_nope' },
        qr/Invalid token/, qr/invalid_token/],
    ['a token with a control character',
        { Authorization => "Bearer a\x01b" }, qr/Invalid token/,
        qr/invalid_token/],
    ['a very long token', { Authorization => 'Bearer ' . ('a' x 600) },
        qr/Invalid token/, qr/invalid_token/],
    ['an expired token', { Authorization => "Bearer $expired" },
        qr/Token expired/, qr/invalid_token/],
    ['a revoked token', { Authorization => "Bearer $revoked" },
        qr/Token revoked/, qr/invalid_token/],
    ['a valid token in X-Auth-Token on a Bearer route',
        { 'X-Auth-Token' => $tok }, qr/Missing bearer token/,
        qr/^Bearer/],
);

for my $case (@refused) {
    my ($name, $headers, $re, $www) = @$case;
    subtest "401: $name" => sub {
        my $before = count();
        my $r = post($headers);
        is($r->{status}, 401, 'status 401');
        is($r->{json}{name}, 'Unauthorized', 'name Unauthorized');
        like($r->{json}{message}, $re, 'message');
        like($r->{headers}{'www-authenticate'} // '', $www,
             'WWW-Authenticate: Bearer');
        is(count(), $before, 'nothing stored');
    };
}

subtest 'a bad token never costs a body parse' => sub {
    my $r = post({ Authorization => 'Bearer nope' }, '{"malformed');
    is($r->{status}, 401, 'status 401, not 400');
};

# the X-Auth-Token location

subtest 'X-Auth-Token route' => sub {
    my $r = post({ 'X-Auth-Token' => $tok }, undef, '/x');
    is($r->{status}, 201, 'a valid X-Auth-Token: 201');

    $r = post({ Authorization => "Bearer $tok" }, undef, '/x');
    is($r->{status}, 401, 'a Bearer token on the X-Auth-Token route: 401');
    like($r->{json}{message}, qr/X-Auth-Token/, 'message');
    ok(!exists $r->{headers}{'www-authenticate'},
       'no WWW-Authenticate: Bearer on this route');

    $r = post({ 'X-Auth-Token' => 'clg_nope' }, undef, '/x');
    is($r->{status}, 401, 'an unknown X-Auth-Token: 401');

    $r = post({ 'X-Auth-Token' => $expired }, undef, '/x');
    is($r->{status}, 401, 'an expired X-Auth-Token: 401');
};

# the cache: a hot token costs no database round trip

subtest 'token cache' => sub {
    my $hot = $t->make_token($acc);
    $t->dbh->do('SELECT pg_stat_statements_reset()');

    is(post({ Authorization => "Bearer $hot" })->{status}, 201, 'first');
    is(token_queries(), 1, 'one token query');

    is(post({ Authorization => "Bearer $hot" })->{status}, 201, 'second');
    is(post({ Authorization => "Bearer $hot" })->{status}, 201, 'third');
    is(token_queries(), 1, 'still one token query: answered from the cache');

    # revocation takes effect within the cache TTL (2s here)

    $t->dbh->do('SELECT corelog.revoke_token($1)', undef, $hot);
    is(post({ Authorization => "Bearer $hot" })->{status}, 201,
       'a revoked token is accepted from the cache within the TTL');

    sleep 3;
    my $r = post({ Authorization => "Bearer $hot" });
    is($r->{status}, 401, 'refused once the TTL has passed');
    like($r->{json}{message}, qr/revoked/, 'Token revoked');
};

subtest 'a token that expires soon is cached no longer than it lives' => sub {
    my $short = $t->make_token($acc, expires_in => '1 second');
    is(post({ Authorization => "Bearer $short" })->{status}, 201, 'valid');
    select(undef, undef, undef, 1.5);
    is(post({ Authorization => "Bearer $short" })->{status}, 401,
       'expired, though the cache TTL has not passed');
};

subtest 'a token that expires at infinity never expires' => sub {
    my $forever = $t->make_token($acc);
    $t->dbh->do(q{UPDATE corelog.tokens SET expires_at = 'infinity'
                   WHERE token_hash = sha256(convert_to(?, 'UTF8'))},
                undef, $forever);
    is(post({ Authorization => "Bearer $forever" })->{status}, 201,
       'valid: 201');
};

$t->done;
done_testing;
