#!/usr/bin/perl

# A cached token without a subrequest (issue 15): when an API location's
# auth location is the built-in checker in an exact location where
# nothing runs before it, a token in the worker's cache is decided in the
# access phase.  Every other shape keeps the subrequest on every request:
# a regular-expression location, rewrite codes in the location (an "if"
# that refuses) or in the server (a rewrite that sends the subrequest
# elsewhere).  The auth locations log their subrequests (log_subrequest),
# so the test counts them; a refusal that the cache skipped would be a
# caller let in (fail open), so those are checked against the database.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;

$t->write_conf(<<'EOF');
    corelog_token_cache 1024 60s;
    log_format sub '$uri';

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

        location ~ ^/rx/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth/rx;
            corelog_api core_log $ts;
        }

        location ~ ^/guarded/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth/guarded;
            corelog_api core_log $ts;
        }

        location /_auth/ {
            internal;
            return 403;
        }

        location = /_auth/bearer {
            internal;
            log_subrequest on;
            access_log %%DIR%%/auth-bearer.log sub;
            corelog_token_check bearer;
        }

        location ~ ^/_auth/rx$ {
            internal;
            log_subrequest on;
            access_log %%DIR%%/auth-rx.log sub;
            corelog_token_check bearer;
        }

        location = /_auth/guarded {
            internal;
            log_subrequest on;
            access_log %%DIR%%/auth-guarded.log sub;
            if ($http_x_deny) {
                return 403;
            }
            corelog_token_check bearer;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;

        # the subrequest to /_auth/bearer goes to a location that refuses
        rewrite ^/_auth/bearer$ /_auth/deny last;

        error_page 400 404 405 413 500 502 503 504 /_corelog/error;

        location = /_corelog/error {
            internal;
            corelog_error core_log;
        }

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth/bearer;
            corelog_api core_log $ts;
        }

        location = /_auth/bearer {
            internal;
            log_subrequest on;
            access_log %%DIR%%/auth-rewritten.log sub;
            corelog_token_check bearer;
        }

        location = /_auth/deny {
            internal;
            log_subrequest on;
            access_log %%DIR%%/auth-deny.log sub;
            return 403;
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
    my ($prefix, %o) = @_;
    return $t->http(POST => "$prefix/core-log/$ts", port => $o{port},
        headers => { 'Content-Type' => 'application/json',
                     Authorization => 'Bearer ' . ($o{token} // $tok),
                     %{ $o{headers} // {} } },
        body => body());
}

sub rows {
    return scalar $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.core_logs');
}

sub logged {
    my ($name) = @_;
    open my $fh, '<', $t->dir . "/auth-$name.log" or return 0;
    my @l = <$fh>;
    return scalar @l;
}

# --- the direct path: one subrequest for a token, then none --------------

is post('')->{status}, 201, 'first write with a token: 201';
is logged('bearer'), 1, 'it went through one auth subrequest (cache miss)';

for my $i (2 .. 4) {
    is post('')->{status}, 201, "write $i with the cached token: 201";
}
is logged('bearer'), 1, 'the cached token made no further subrequest';
is rows(), 4, 'four core logs committed';

# a token not in the cache (unknown) still asks the checker: a 401 for
# each, the subrequest each time, nothing written

my $bad = 'clg_' . ('0' x 64);
for my $i (1 .. 2) {
    my $r = post('', token => $bad);
    is $r->{status}, 401, "unknown token $i: 401";
}
is logged('bearer'), 3, 'each unknown token went to the checker';

my $r = $t->http(POST => "/core-log/$ts",
    headers => { 'Content-Type' => 'application/json' }, body => body());
is $r->{status}, 401, 'no token at all: 401';
is logged('bearer'), 4, 'and it went to the checker';
is rows(), 4, 'nothing written by the refused callers';

# --- a regular-expression auth location: always the subrequest -----------

for my $i (1 .. 3) {
    is post('/rx')->{status}, 201, "regex auth location, write $i: 201";
}
is logged('rx'), 3, 'a regex auth location is asked on every request';

# --- rewrite codes in the auth location: never skipped -------------------

is post('/guarded')->{status}, 201, 'guarded auth location: 201';
is post('/guarded', headers => { 'X-Deny' => 1 })->{status}, 403,
    'its "if" still refuses a cached token (no fail open)';
is post('/guarded')->{status}, 201, 'and lets the next one in';
is logged('guarded'), 3, 'each request went through the guarded location';
is rows(), 9, 'the refused write was not committed';

# --- rewrite codes at the server level: never skipped ---------------------

for my $i (1 .. 2) {
    is post('', port => $t->port2)->{status}, 403,
        "server-level rewrite to a refusing location, write $i: 403";
}
is logged('deny'), 2, 'each went to the location the rewrite chose';
is logged('rewritten'), 0, 'never to the checker';
is rows(), 9, 'no write through the rewritten server';

# --- the status counters see the direct path as the checker's answers ----

unlike $t->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg';

$t->stop;

done_testing;
