#!/usr/bin/perl

# corelog_auth_request in front of an external identity service reached
# with proxy_pass (a second server block stands in for one): its verdicts
# become JSON answers, and it never sees the body or its length.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Encode ();
use IO::Socket::INET;
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

my $acc = $t->make_account('acme');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

# a port that accepts connections and never answers
my $silent = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1',
                                   LocalPort => 0, Proto => 'tcp')
    or die "listen: $!";
my $silent_port = $silent->sockport;

my $conf = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;

        error_page 400 404 405 413 500 502 503 504 /_corelog/error;

        location = /_corelog/error {
            internal;
            corelog_error core_log;
        }

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth;
            corelog_api core_log $ts;
        }

        location ~ ^/silent/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth_silent;
            corelog_api core_log $ts;
        }

        location ~ ^/closed/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth_closed;
            corelog_api core_log $ts;
        }

        # no proxy_set_header Content-Length "", no proxy_pass_request_body
        # off: the module must keep the body and its length away
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/identity;
            proxy_read_timeout 5s;
            # the header itself must be gone, not only the proxied length
            proxy_set_header X-Seen-Length $http_content_length;
        }

        location = /_auth_silent {
            internal;
            proxy_pass http://127.0.0.1:%%SILENT%%/identity;
            proxy_read_timeout 1s;
        }

        location = /_auth_closed {
            internal;
            proxy_pass http://127.0.0.1:1/identity;
        }
    }

    # the identity service
    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /identity {
            if ($http_content_length) {
                return 418;
            }
            if ($http_transfer_encoding) {
                return 418;
            }
            if ($http_x_seen_length) {
                return 418;
            }
            if ($http_authorization = "Bearer good") {
                add_header X-Corelog-Account %%ACCOUNT%%;
                add_header X-Corelog-Domain dom-1;
                add_header X-Corelog-Project proj.1;
                return 204;
            }
            if ($http_authorization = "Bearer upper") {
                add_header X-Corelog-Account %%ACCOUNT_UC%%;
                return 200;
            }
            if ($http_authorization = "Bearer forbidden") {
                add_header X-Corelog-Error "Token lacks the log:write scope"
                           always;
                return 403;
            }
            if ($http_authorization = "Bearer slow-down") {
                add_header Retry-After 7 always;
                return 429;
            }
            if ($http_authorization = "Bearer down") {
                add_header Retry-After 9 always;
                return 503;
            }
            if ($http_authorization = "Bearer no-account") {
                return 204;
            }
            if ($http_authorization = "Bearer bad-account") {
                add_header X-Corelog-Account not-a-uuid;
                return 204;
            }
            if ($http_authorization = "Bearer bad-domain") {
                add_header X-Corelog-Account %%ACCOUNT%%;
                add_header X-Corelog-Domain "dom/1";
                return 204;
            }
            if ($http_authorization = "Bearer long-error") {
                add_header X-Corelog-Error %%LONG%% always;
                return 403;
            }
            if ($http_authorization = "Bearer bad-project") {
                add_header X-Corelog-Account %%ACCOUNT%%;
                add_header X-Corelog-Project "a b";
                return 204;
            }
            if ($http_authorization = "Bearer teapot") {
                return 302 /elsewhere;
            }
            if ($http_authorization = "Bearer crash") {
                return 500;
            }

            # an identity with a status that is not 2xx: no verdict to
            # allow the caller
            if ($http_authorization = "Bearer redirect-with-account") {
                add_header X-Corelog-Account %%ACCOUNT%% always;
                add_header X-Corelog-Domain dom-1 always;
                add_header X-Corelog-Project proj.1 always;
                return 302 /elsewhere;
            }
            if ($http_authorization = "Bearer teapot-with-account") {
                add_header X-Corelog-Account %%ACCOUNT%% always;
                add_header X-Corelog-Domain dom-1 always;
                add_header X-Corelog-Project proj.1 always;
                return 418;
            }
            if ($http_authorization = "Bearer crash-with-account") {
                add_header X-Corelog-Account %%ACCOUNT%% always;
                add_header X-Corelog-Domain dom-1 always;
                add_header X-Corelog-Project proj.1 always;
                return 500;
            }

            # 8-bit bytes, not UTF-8, in the message
            if ($http_authorization = "Bearer bytes-401") {
                add_header X-Corelog-Error "%%BYTES%%" always;
                add_header WWW-Authenticate 'Bearer realm="idp"' always;
                return 401;
            }
            if ($http_authorization = "Bearer bytes-403") {
                add_header X-Corelog-Error "%%BYTES%%" always;
                return 403;
            }
            add_header WWW-Authenticate 'Bearer realm="idp"' always;
            return 401;
        }
    }
EOF

$conf =~ s/%%ACCOUNT%%/$acc/g;
$conf =~ s/%%LONG%%/'x' x 201/ge;
$conf =~ s/%%ACCOUNT_UC%%/uc $acc/ge;
$conf =~ s/%%SILENT%%/$silent_port/g;

# the config file is bytes: these reach the identity service's header as
# they are
my $bytes = "\xff\xfe caf\xe9";
$conf =~ s/%%BYTES%%/$bytes/g;

$t->write_conf($conf);
$t->run;

ok(index($t->nginx_conf, "X-Corelog-Error \"\xff\xfe caf\xe9\"") >= 0,
   'the identity service sends the raw bytes');

sub body {
    my ($rq, $rs) = $t->make_request_response($ts);
    return encode_json({ status => 200, method => 'GET', elapsedTime => 1,
                         corePathnameId => $s->{core_pathname_id},
                         requestId => $rq, responseId => $rs });
}

sub post {
    my ($token, %opt) = @_;
    return $t->http(POST => ($opt{prefix} // '') . "/core-log/$ts",
        headers => { 'Content-Type' => 'application/json',
                     defined $token ? (Authorization => "Bearer $token") : (),
                     %{ $opt{headers} // {} } },
        body => $opt{body} // body());
}

sub count {
    return $t->dbh->selectrow_array('SELECT count(*) FROM corelog.core_logs');
}

subtest 'allowed: 201, with the body length kept from the service' => sub {
    my $r = post('good');
    is($r->{status}, 201, 'status 201');
    is($r->{json}{trafficSourceId}, $ts, 'the account owns the source');
};

subtest 'allowed with 200 and an upper case account' => sub {
    is(post('upper')->{status}, 201, 'status 201');
};

subtest 'a chunked body never reaches the service' => sub {
    my $b = body();
    my $raw = "POST /core-log/$ts HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer good\r\nContent-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $b, $b);
    is($t->http(POST => "/core-log/$ts", raw => $raw)->{status}, 201, 'status 201');
};

# [name, token, status, name, message pattern, headers]

my @verdicts = (
    ['401 passed on', 'nope', 401, 'Unauthorized', qr/./,
        { 'www-authenticate' => 'Bearer realm="idp"' }],
    ['no token at all', undef, 401, 'Unauthorized', qr/./, {}],
    ['403 with the service message', 'forbidden', 403, 'Forbidden',
        qr/^Token lacks the log:write scope$/, {}],
    ['429 with Retry-After', 'slow-down', 429, 'TooManyRequests', qr/./,
        { 'retry-after' => '7' }],
    ['503 with Retry-After', 'down', 503, 'ServiceUnavailable', qr/./,
        { 'retry-after' => '9' }],
    ['2xx without an account: 500', 'no-account', 500,
        'InternalServerError', qr/./, {}],
    ['2xx with an invalid account: 500', 'bad-account', 500,
        'InternalServerError', qr/./, {}],
    ['2xx with an invalid project: 500', 'bad-project', 500,
        'InternalServerError', qr/./, {}],
    ['2xx with an invalid domain: 500', 'bad-domain', 500,
        'InternalServerError', qr/./, {}],
    ['403 with a message over 200 bytes: the status\'s own', 'long-error',
        403, 'Forbidden', qr/^Forbidden$/, {}],
    ['a redirect without an identity: 500', 'teapot', 500,
        'InternalServerError', qr/./, {}],
    ['a 500 without an identity: 500', 'crash', 500, 'InternalServerError',
        qr/./, {}],

    # a valid identity does not make an unexpected status a verdict
    ['a redirect with a valid identity: 500', 'redirect-with-account', 500,
        'InternalServerError', qr/^Internal server error$/, {}],
    ['a 418 with a valid identity: 500', 'teapot-with-account', 500,
        'InternalServerError', qr/^Internal server error$/, {}],
    ['a 500 with a valid identity: 500', 'crash-with-account', 500,
        'InternalServerError', qr/^Internal server error$/, {}],
);

for my $case (@verdicts) {
    my ($name, $token, $status, $ename, $re, $headers) = @$case;
    subtest $name => sub {
        my $before = count();
        my $r = post($token);
        is($r->{status}, $status, "status $status");
        is($r->{json}{name}, $ename, "name $ename");
        like($r->{json}{message}, $re, 'message');
        for my $h (sort keys %$headers) {
            is($r->{headers}{$h}, $headers->{$h}, "$h passed on");
        }
        is(count(), $before, 'nothing stored');
    };
}

like($t->error_log, qr/corelog: auth request "\/_auth" allowed the caller but gave no X-Corelog-Account/,
     'a missing account header is logged');
like($t->error_log, qr/corelog: auth request "\/_auth" answered unexpected status 302/,
     'an unexpected status is logged');

# X-Corelog-Error is the message only when it is printable ASCII: 8-bit
# bytes (here not even UTF-8) give the status's own message, and the answer
# is valid UTF-8 JSON

for my $case (['bytes-401', 401, 'Unauthorized', 'Authentication required',
               { 'www-authenticate' => 'Bearer realm="idp"' }],
              ['bytes-403', 403, 'Forbidden', 'Forbidden', {}])
{
    my ($token, $status, $ename, $msg, $headers) = @$case;

    subtest "$status with 8-bit bytes in X-Corelog-Error" => sub {
        my $before = count();
        my $r = post($token);
        is($r->{status}, $status, "status $status");

        my $copy = $r->{body};
        ok(eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 },
           'the answer is valid UTF-8') or diag explain $r->{body};
        my $j = eval { JSON::PP->new->utf8->decode($r->{body}) };
        ok($j, 'the answer is JSON') or diag $@;
        is($j->{name}, $ename, "name $ename");
        is($j->{message}, $msg, "the status's own message");
        unlike($r->{body}, qr/[\x80-\xff]|caf/,
               "none of the service's bytes");
        for my $h (sort keys %$headers) {
            is($r->{headers}{$h}, $headers->{$h}, "$h passed on");
        }
        is(count(), $before, 'nothing stored');
    };
}

subtest 'a service that never answers: 500 within its timeout' => sub {
    my $start = time;
    my $r = post('good', prefix => '/silent');
    is($r->{status}, 500, 'status 500');
    is($r->{json}{name}, 'InternalServerError', 'JSON');
    cmp_ok(time - $start, '<=', 4, 'bounded by proxy_read_timeout');
};

subtest 'a service that cannot be reached: 500' => sub {
    my $r = post('good', prefix => '/closed');
    is($r->{status}, 500, 'status 500');
    is($r->{json}{name}, 'InternalServerError', 'JSON');
};

$t->done;
done_testing;
