#!/usr/bin/perl

# corelog_auth_request cannot be switched off by configuration: it denies
# in the access phase, for every method, whatever serves the location
# (a proxy, static files), as nginx's auth_request does; "if" and
# "limit_except" blocks inside an API location keep its route; `nginx -t`
# refuses a second content handler or a "return" in an API location,
# whatever the order, naming the location and the directive's line.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom', project => 'proj');
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

mkdir $t->dir . '/html';
mkdir $t->dir . '/html/static';
open my $fh, '>', $t->dir . '/html/static/file.txt' or die $!;
print $fh "static content\n";
close $fh;

$t->write_conf(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth;
            corelog_api core_log $ts;

            if ($arg_flag) {
                set $flagged 1;
            }

            limit_except POST {
                deny all;
            }
        }

        location /protected/ {
            corelog_auth_request /_auth;
            proxy_pass http://127.0.0.1:%%PORT2%%/;
        }

        location /static/ {
            corelog_auth_request /_auth;
            root %%DIR%%/html;
        }

        location /nested/ {
            corelog_auth_request /_auth;

            location /nested/inner/ {
                proxy_pass http://127.0.0.1:%%PORT2%%/;
            }
        }

        location /any/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            corelog_auth_request /_auth;
            proxy_pass http://127.0.0.1:%%PORT2%%/;
        }

        location /any-denied/ {
            satisfy any;
            deny all;
            corelog_auth_request /_auth;
            proxy_pass http://127.0.0.1:%%PORT2%%/;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }
    }

    # the backend: every request it sees is in backend.log
    server {
        listen 127.0.0.1:%%PORT2%%;
        access_log %%DIR%%/backend.log;

        location / {
            add_header X-Backend yes;
            return 200 "backend $request_method\n";
        }
    }
EOF
$t->run;

sub backend_hits {
    open my $fh, '<', $t->dir . '/backend.log' or return 0;
    my @l = <$fh>;
    return scalar @l;
}

my %good = (Authorization => "Bearer $tok");

subtest 'a proxied location: no token, a bad token, any method: 401' => sub {
    my $before = backend_hits();
    for my $case (['POST', { Authorization => 'Bearer wrong' }],
                  ['POST', {}],
                  ['DELETE', {}],
                  ['GET', { Authorization => 'Bearer clg_' . ('0' x 64) }],
                  ['PUT', { Authorization => 'Basic Zm9vOmJhcg==' }])
    {
        my ($method, $h) = @$case;
        my $r = $t->http($method => '/protected/x',
                         headers => { %$h, 'Content-Type' => 'text/plain' },
                         body => 'payload');
        is($r->{status}, 401, "$method: 401");
        is($r->{json}{name}, 'Unauthorized', "$method: a JSON error");
        like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
             "$method: WWW-Authenticate");
        ok(!$r->{headers}{'x-backend'}, "$method: not from the backend");
    }
    is(backend_hits(), $before, 'the backend saw none of them');
};

subtest 'a proxied location: a valid token passes, with its body' => sub {
    my $before = backend_hits();
    for my $method (qw(POST DELETE GET)) {
        my $r = $t->http($method => '/protected/x', headers => \%good,
                         body => $method eq 'GET' ? undef : 'payload');
        is($r->{status}, 200, "$method: 200");
        is($r->{body}, "backend $method\n", "$method: the backend's answer");
    }
    is(backend_hits(), $before + 3, 'the backend saw three requests');
};

subtest 'a static location: 401 without a token, the file with one' => sub {
    my $r = $t->http(GET => '/static/file.txt');
    is($r->{status}, 401, 'GET without a token: 401');
    unlike($r->{body}, qr/static content/, 'the file is not served');
    $r = $t->http(HEAD => '/static/file.txt');
    is($r->{status}, 401, 'HEAD without a token: 401');
    $r = $t->http(GET => '/static/file.txt', headers => \%good);
    is($r->{status}, 200, 'GET with a valid token: 200');
    is($r->{body}, "static content\n", 'the file');
};

subtest 'a nested location inherits the check' => sub {
    my $before = backend_hits();
    my $r = $t->http(GET => '/nested/inner/x');
    is($r->{status}, 401, 'no token: 401');
    is(backend_hits(), $before, 'not proxied');
    $r = $t->http(GET => '/nested/inner/x', headers => \%good);
    is($r->{status}, 200, 'a valid token: 200');
};

subtest 'satisfy any: another access module may allow, as auth_request' => sub {
    my $r = $t->http(GET => '/any/x');
    is($r->{status}, 200, 'allowed by address, without a token');
    $r = $t->http(GET => '/any-denied/x');
    is($r->{status}, 401, 'denied by address and without a token: 401');
    $r = $t->http(GET => '/any-denied/x', headers => \%good);
    is($r->{status}, 200, 'denied by address, a valid token: 200');
};

sub core_log {
    my ($uri) = @_;
    my ($rq, $rs) = $t->make_request_response($ts);
    return $t->http(POST => $uri,
        headers => { %good, 'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1, requestId => $rq,
                              responseId => $rs,
                              corePathnameId => $s->{core_pathname_id} }));
}

subtest 'an "if" inside an API location keeps the route' => sub {
    my $r = core_log("/core-log/$ts?flag=1");
    is($r->{status}, 201, 'the if block matched: 201') or diag $r->{body};
    my ($n) = $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.core_logs WHERE id = $1', undef,
        $r->{json}{id} // '00000000-0000-0000-0000-000000000000');
    is($n, 1, 'the row is stored');
    $r = core_log("/core-log/$ts");
    is($r->{status}, 201, 'the if block did not match: 201');
};

subtest '"limit_except" inside an API location' => sub {
    my $r = $t->http(GET => "/core-log/$ts");
    is($r->{status}, 403, 'GET: denied by limit_except');
    $r = $t->http(POST => "/core-log/$ts", headers => {
        Authorization => 'Bearer wrong', 'Content-Type' => 'application/json' },
        body => '{}');
    is($r->{status}, 401, 'POST with a bad token: 401');
};

$t->stop;

# nginx -t: what cannot work is refused, naming the location and the line

my $auth = <<'EOF';
        location = /_auth {
            internal;
            corelog_token_check bearer;
        }
EOF

sub conf_test {
    my ($locations) = @_;
    $t->write_conf("    server {\n        listen 127.0.0.1:%%PORT%%;\n"
                   . $locations . $auth . "    }\n");
    my ($rc, $out) = $t->nginx_test_conf;
    return ($rc, $out);
}

# the line of the first line matching $re in the written nginx.conf
sub line_of {
    my ($re) = @_;
    my @lines = split /\n/, $t->nginx_conf;
    for my $i (0 .. $#lines) {
        return $i + 1 if $lines[$i] =~ $re;
    }
    die "no line matches $re";
}

my @refused = (
    ['proxy_pass after corelog_api', '/v1/logtanks', qr/corelog_api logtank/,
     <<'EOF'],
        location = /v1/logtanks {
            corelog_auth_request /_auth;
            corelog_api logtank;
            proxy_pass http://127.0.0.1:9;
        }
EOF
    ['fastcgi_pass after corelog_api', '/v1/logtanks',
     qr/corelog_api logtank/, <<'EOF'],
        location = /v1/logtanks {
            corelog_auth_request /_auth;
            corelog_api logtank;
            fastcgi_pass 127.0.0.1:9;
        }
EOF
    ['return after corelog_api', '/v1/logtanks', qr/corelog_api logtank/,
     <<'EOF'],
        location = /v1/logtanks {
            corelog_auth_request /_auth;
            corelog_api logtank;
            return 200;
        }
EOF
    ['return before corelog_api', '/api/v1/log/create',
     qr/corelog_api channel_log/, <<'EOF'],
        location = /api/v1/log/create {
            return 204;
            corelog_auth_request /_auth;
            corelog_api channel_log;
        }
EOF
    ['proxy_pass inside an "if" of an API location', '/api/v1/log/create',
     qr/corelog_api channel_log/, <<'EOF'],
        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
            if ($arg_x) {
                proxy_pass http://127.0.0.1:9;
            }
        }
EOF
    ['proxy_pass after corelog_token_check', '/_other_auth',
     qr/corelog_token_check x-auth-token/, <<'EOF'],
        location = /_other_auth {
            corelog_token_check x-auth-token;
            proxy_pass http://127.0.0.1:9;
        }
EOF
    ['return after corelog_error', '/_err', qr/corelog_error core_log/,
     <<'EOF'],
        location = /_err {
            corelog_error core_log;
            return 404;
        }
EOF
    ['corelog_api without corelog_auth_request', '/api/v1/log/create',
     qr/corelog_api channel_log/, <<'EOF'],
        location = /api/v1/log/create {
            corelog_api channel_log;
        }
EOF
);

for my $case (@refused) {
    my ($name, $loc, $directive, $conf) = @$case;
    subtest "nginx -t refuses: $name" => sub {
        my ($rc, $out) = conf_test($conf);
        isnt($rc, 0, 'nginx -t fails');
        my $line = line_of($directive);
        my $file = $t->dir . '/nginx.conf';
        like($out, qr/\[emerg\].*corelog: location "\Q$loc\E" .* in \Q$file\E:$line$/m,
             "names the location and the line of the directive ($line)")
            or diag $out;
    };
}

subtest 'nginx -t accepts "if" (with set or return) and limit_except' => sub {
    my ($rc, $out) = conf_test(<<'EOF');
        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
            if ($arg_x) {
                return 403;
            }
            limit_except POST {
                deny all;
            }
        }
EOF
    is($rc, 0, 'exit 0') or diag $out;
};

subtest 'the body-buffer warning names its location, once each' => sub {
    my ($rc, $out) = conf_test(<<'EOF');
        client_max_body_size 1m;
        client_body_buffer_size 16k;

        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
            if ($arg_x) {
                return 403;
            }
        }

        location = /v1/logtanks {
            corelog_auth_request /_auth;
            corelog_api logtank;
        }
EOF
    is($rc, 0, 'exit 0') or diag $out;
    my @w = $out =~ /(\[warn\].*corelog: .*)/g;
    is(scalar @w, 2, 'two warnings') or diag $out;
    my $file = $t->dir . '/nginx.conf';
    my $l1 = line_of(qr/corelog_api channel_log/);
    my $l2 = line_of(qr/corelog_api logtank/);
    like($w[0] // '', qr/location "\/api\/v1\/log\/create": "client_body_buffer_size" 16384 is smaller than "client_max_body_size" 1048576.* in \Q$file\E:$l1$/,
         'the channel location');
    like($w[1] // '', qr/location "\/v1\/logtanks": .* in \Q$file\E:$l2$/,
         'the logtank location');
};

$t->done;
done_testing;
