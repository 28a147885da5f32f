#!/usr/bin/perl
# The test harness itself (Corelog::Test), with plain nginx: no corelog
# directive and no load_module, so it works before the module builds.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Corelog::Test;

my $t = Corelog::Test->new;

# PostgreSQL: the schema is loaded, pg_stat_statements is available.
like($t->pg_conninfo, qr/^host=127\.0\.0\.1 port=\d+ dbname=corelog user=postgres$/,
     'pg_conninfo');
cmp_ok($t->dbh->selectrow_array(
           'SELECT max(version) FROM corelog.schema_version'),
       '>=', 1, 'schema loaded');
ok($t->dbh->selectrow_array(
       q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'}),
   'pg_stat_statements installed');
is($t->dbh->selectrow_array('SHOW pg_stat_statements.track'), 'all',
   'pg_stat_statements.track = all');

# fixtures
my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
like(Corelog::Test::uuid(), $uuid_re, 'uuid()');

my $account = $t->make_account('harness');
like($account, qr/^[0-9a-f-]{36}$/, 'make_account');

my $token = $t->make_token($account, domain => 'd1', project => 'p1',
                           expires_in => '1 hour');
like($token, qr/^clg_[0-9a-f]{64}$/, 'make_token');
my $revoked = $t->make_token($account, revoked => 1);
is($t->dbh->selectrow_array(
       q{SELECT count(*) FROM corelog.tokens
          WHERE account_id = ? AND revoked_at IS NOT NULL}, undef, $account),
   1, 'make_token revoked => 1');

my $seed = $t->seed_corelog($account);
like($seed->{$_}, qr/^[0-9a-f-]{36}$/, "seed_corelog $_")
    for qw(traffic_source_id core_pathname_id request_id response_id);
my ($req, $res) = $t->make_request_response($seed->{traffic_source_id});
isnt($req, $seed->{request_id}, 'make_request_response: a new request');

# PostgreSQL restart: dbh reconnects.
$t->pg_restart;
is($t->dbh->selectrow_array('SELECT count(*) FROM corelog.accounts'), 1,
   'data survives pg_restart');
like($t->pg_log, qr/database system is ready to accept connections/,
     'pg_log');

# nginx
$t->write_conf(<<'EOF', no_module => 1, no_postgres => 1);
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200 "ok"; }
        location = /json { return 200 '{"a":[1,2]}'; }
        location = /dir { return 200 "%%DIR%%"; }
        location = /chunked {
            sub_filter_types *;
            sub_filter "ok" "chunked ok";    # drops Content-Length
            return 200 "ok";
        }
        location = /echo { return 200 "$http_content_length $content_type"; }
    }
    server {
        listen 127.0.0.1:%%PORT2%%;
        location / { return 201 "two"; }
    }
EOF

my ($rc, $out) = $t->nginx_test_conf;
is($rc, 0, 'nginx -t') or diag $out;

$t->run;

my $r = $t->http(GET => '/');
is($r->{status}, 200, 'GET /');
is($r->{body}, 'ok', 'body');
is($r->{headers}{'content-length'}, 2, 'headers lowercased');

$r = $t->http(GET => '/json');
is_deeply($r->{json}, { a => [1, 2] }, 'json decoded');

is($t->http(GET => '/dir')->{body}, $t->dir, '%%DIR%%');
is($t->http(GET => '/', port => $t->port2)->{status}, 201, '%%PORT2%%');

$r = $t->http(POST => '/echo', json => { x => 1 });
is($r->{body}, '7 application/json', 'json => : Content-Length, -Type');
$r = $t->http(PUT => '/echo', body => 'abc',
              headers => [ 'Content-Type' => 'text/plain' ]);
is($r->{body}, '3 text/plain', 'body => and headers as a list');

$r = $t->http(GET => '/chunked');
is($r->{headers}{'transfer-encoding'}, 'chunked', 'chunked response');
is($r->{body}, 'chunked ok', 'chunked body decoded');

my $t0 = time;
$r = $t->http(GET => '/', headers => { Connection => 'keep-alive' });
ok($r->{status} == 200 && !$r->{error} && time - $t0 < 5,
   'keep-alive: no wait for the close');

$r = $t->http(GET => '/', port => 1);
is($r->{status}, 0, 'connection refused: status 0');
ok($r->{error}, 'connection refused: error');

$r = $t->http(GET => '/', raw => "GET / HTTP/1.0\r\n\r\n");
is($r->{status}, 200, 'raw request');

$r = $t->http(HEAD => '/');
is($r->{status}, 200, 'HEAD');
is($r->{body}, '', 'HEAD has no body');

my $many = $t->http_many([ map { [ GET => "/?n=$_" ] } 1 .. 20 ]);
is(scalar @$many, 20, 'http_many: 20 results');
is(scalar(grep { $_->{status} == 200 && $_->{body} eq 'ok' } @$many), 20,
   'http_many: all 200 ok');

# client abort
my $s = $t->http_start(GET => '/', headers => { Connection => 'keep-alive' });
close $s;

# reload: new workers
my @old = $t->worker_pids;
is(scalar @old, 1, 'one worker');
ok($t->reload, 'reload');
ok(!grep({ my $o = $_; grep { $_ == $o } $t->worker_pids } @old),
   'reload: new worker');
is($t->http(GET => '/')->{status}, 200, 'GET after reload');

# a bad configuration: nginx -t rejects it
$t->write_conf("    no_such_directive on;\n", no_module => 1,
               no_postgres => 1);
($rc, $out) = $t->nginx_test_conf;
isnt($rc, 0, 'nginx -t fails on a bad directive');
like($out, qr/unknown directive "no_such_directive"/, 'nginx -t message');

# the shipped configuration: all placeholders replaced
$t->write_shipped_conf;
my $conf = $t->nginx_conf;
unlike($conf, qr/\@[A-Z]+\@/, 'write_shipped_conf: no @...@ left');
like($conf, qr/listen 127\.0\.0\.1:${\ $t->port};/, 'write_shipped_conf: port');
like($conf, qr/^http \{\n    client_body_temp_path/m,
     'write_shipped_conf: temp paths');
like($conf, qr/^    access_log "\Q${\ $t->dir}\E\/access\.log" corelog /m,
     'write_shipped_conf: the access log is $t->access_log');

$t->done;

# pg_start => 0: prepared, stopped; the schema is there once started.
my $t2 = Corelog::Test->new(pg_start => 0);
ok(!eval { DBI->connect("dbi:Pg:dbname=corelog;host=127.0.0.1;port="
                        . $t2->pg_port, 'postgres', '',
                        { PrintError => 0, RaiseError => 1 }) },
   'pg_start => 0: PostgreSQL is down');
$t2->pg_start;
is($t2->dbh->selectrow_array('SELECT count(*) FROM corelog.accounts'), 0,
   'pg_start => 0: schema loaded');

# the error log checks
open my $fh, '>', $t2->dir . '/error.log' or die;
print $fh "2024/01/01 00:00:00 [alert] 1#1: fake\n",
          "2024/01/01 00:00:00 [notice] 1#1: worker process 2 exited on signal 11\n",
          "2024/01/01 00:00:00 [info] 1#1: fine\n";
close $fh;
is(scalar(() = $t2->_log_problems), 2, 'error log checks find problems');
unlink $t2->dir . '/error.log';

$t2->done;

done_testing;
