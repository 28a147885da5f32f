#!/usr/bin/perl

# `nginx -t` accepts the shipped configuration and rejects every bad
# directive with a clear "corelog" message or nginx's own.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;

my $t = Corelog::Test->new(pg => 0);

my $route = Corelog::Test::core_log_server();

my $pg = 'corelog_postgres "host=127.0.0.1 port=5432 dbname=corelog";';

subtest 'the shipped configuration passes nginx -t' => sub {
    $t->write_shipped_conf(conninfo => 'host=127.0.0.1 dbname=corelog');
    my ($rc, $out) = $t->nginx_test_conf;
    is($rc, 0, 'exit 0') or diag $out;
};

subtest 'a body buffer smaller than the body limit: a warning' => sub {
    $t->write_conf("$pg client_max_body_size 1m; client_body_buffer_size 16k;"
                   . $route, no_postgres => 1);
    my ($rc, $out) = $t->nginx_test_conf;
    is($rc, 0, 'exit 0') or diag $out;
    like($out, qr/\[warn\].*corelog: location "\^\/core-log\/\(\?<ts>\[\^\/\]\*\)\$": "client_body_buffer_size" 16384 is smaller than "client_max_body_size" 1048576/,
         'warns that bodies would be read back from a file');

    $t->write_shipped_conf(conninfo => 'host=127.0.0.1 dbname=corelog');
    ($rc, $out) = $t->nginx_test_conf;
    unlike($out, qr/\[warn\]/, 'the shipped configuration does not warn');

    # a user's shell often has a soft limit of 1024 open files (root's here
    # is higher): the shipped worker_connections must not exceed it
    # without worker_rlimit_nofile
    ($rc, $out) = $t->nginx_test_conf(wrap => [
                      '/bin/sh', '-c', 'ulimit -S -n 1024 && exec "$@"',
                      'sh' ]);
    is($rc, 0, 'with a soft limit of 1024 open files: exit 0') or diag $out;
    unlike($out, qr/\[warn\]/,
           'with a soft limit of 1024 open files: no warning');
};

subtest 'every directive with a value passes' => sub {
    $t->write_conf(<<"EOF2" . $route, no_postgres => 1);
    $pg
    corelog_connections 8;
    corelog_queue_max 100;
    corelog_batch_max 50;
    corelog_batch_wait 999ms;
    corelog_query_timeout 2s;
    corelog_connect_timeout 500ms;
    corelog_token_cache 10 1m;
    corelog_prepared_statements off;
EOF2
    my ($rc, $out) = $t->nginx_test_conf;
    is($rc, 0, 'exit 0') or diag $out;
};

subtest 'a host name is resolved at configuration time' => sub {
    $t->write_conf('corelog_postgres "host=localhost dbname=corelog";'
                   . $route, no_postgres => 1);
    my ($rc, $out) = $t->nginx_test_conf;
    is($rc, 0, 'exit 0') or diag $out;
};

# [name, http text, expected output]
my @bad = (
    ['conninfo that libpq rejects',
        'corelog_postgres "nosuchkey=1";' . $route,
        qr/corelog: invalid PostgreSQL conninfo: .*nosuchkey/],
    ['conninfo with an unbalanced quote',
        q{corelog_postgres "host='x";} . $route,
        qr/corelog: invalid PostgreSQL conninfo/],
    ['empty conninfo', 'corelog_postgres "";' . $route,
        qr/corelog: empty conninfo/],
    ['a host name that does not resolve',
        'corelog_postgres "host=no-such-host.invalid";' . $route,
        qr/corelog: host "no-such-host.invalid" in conninfo not found/],
    ['corelog_postgres twice', "$pg\n$pg" . $route,
        qr/"corelog_postgres" directive is duplicate/],
    ['corelog_postgres in a location',
        "server { listen 127.0.0.1:%%PORT%%; location / { $pg } }",
        qr/"corelog_postgres" directive is not allowed here/],
    ['corelog_connections 0', "$pg corelog_connections 0;" . $route,
        qr/value must be between 1 and \d+/],
    ['corelog_connections not a number',
        "$pg corelog_connections many;" . $route, qr/invalid number/],
    ['corelog_queue_max 0', "$pg corelog_queue_max 0;" . $route,
        qr/value must be between 1 and \d+/],
    ['corelog_batch_max too large', "$pg corelog_batch_max 100000;" . $route,
        qr/value must be between 1 and 1000/],
    ['corelog_query_timeout not a time',
        "$pg corelog_query_timeout soon;" . $route, qr/invalid value/],
    ['corelog_query_timeout 0', "$pg corelog_query_timeout 0;" . $route,
        qr/must be more than 0/],
    ['corelog_batch_wait not a time',
        "$pg corelog_batch_wait soon;" . $route, qr/invalid value/],
    ['corelog_batch_wait as long as a write may wait for a connection',
        "$pg corelog_query_timeout 4s; corelog_batch_wait 2s;" . $route,
        qr/"corelog_batch_wait" 2000ms must be less than half of "corelog_query_timeout" \(4000ms\)/],
    ['corelog_token_cache 0', "$pg corelog_token_cache 0;" . $route,
        qr/corelog: invalid token cache size/],
    ['corelog_token_cache bad time', "$pg corelog_token_cache 10 x;" . $route,
        qr/corelog: invalid token cache time/],
    ['corelog_api of an unknown route',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . " corelog_auth_request /a; corelog_api nope; } }",
        qr/corelog: unknown API "nope"/],
    ['corelog_api core_log without its argument',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . " corelog_auth_request /a; corelog_api core_log; } }",
        qr/takes 1 argument/],
    ['corelog_api without corelog_auth_request',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_api core_log $uri; } }',
        qr/needs "corelog_auth_request"/],
    ['corelog_api without corelog_postgres',
        "server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_auth_request /a; corelog_api core_log $uri; } }',
        qr/needs "corelog_postgres"/],
    ['corelog_token_check without corelog_postgres',
        "server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_token_check bearer; } }',
        qr/needs "corelog_postgres"/],
    ['corelog_token_check of an unknown kind',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_token_check basic; } }',
        qr/corelog: invalid value "basic"/],
    ['corelog_auth_request with a relative URI',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_auth_request auth; corelog_api core_log $uri; } }',
        qr/takes a URI starting with "\/"/],
    ['two content handlers in a location',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_auth_request /a; corelog_api core_log $uri;'
        . ' corelog_token_check bearer; } }',
        qr/corelog: a location takes one of/],
    ['corelog_error of an unknown route',
        "$pg server { listen 127.0.0.1:%%PORT%%; location / {"
        . ' corelog_error nope; } }',
        qr/corelog: unknown API "nope"/],
);

for my $case (@bad) {
    my ($name, $http, $re) = @$case;
    subtest $name => sub {
        $t->write_conf($http, no_postgres => 1);
        my ($rc, $out) = $t->nginx_test_conf;
        isnt($rc, 0, 'nginx -t fails');
        like($out, qr/\[emerg\]/, 'an [emerg] line');
        like($out, $re, 'says what is wrong') or diag $out;
    };
}

$t->done;
done_testing;
