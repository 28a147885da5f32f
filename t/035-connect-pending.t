#!/usr/bin/perl

# A PostgreSQL host that accepts the TCP connection and never answers (a
# hung server, a firewall that swallows the startup packet): the first
# connection attempt stays pending up to corelog_connect_timeout.  Until
# then writes and token lookups are queued, and each waits at most
# half of corelog_query_timeout by its own wait timer (503, logged as such), not
# until the connect gives up.  A reload or a graceful stop is not held by
# the pending connect.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new(pg => 0);

# accepts connections (the kernel completes them) and never reads
my $hole = IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1',
                                 LocalPort => 0, Proto => 'tcp')
    or die "listen: $!";
my $hole_port = $hole->sockport;
my $acc = Corelog::Test::uuid();
my $ts = Corelog::Test::uuid();

$t->write_conf(<<"EOF", no_postgres => 1);
    corelog_postgres "host=127.0.0.1 port=$hole_port dbname=corelog user=postgres";
    corelog_connections 2;
    corelog_connect_timeout 60s;
    corelog_query_timeout 1s;

    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/core-log/(?<ts>[^/]*)\$ {
            corelog_auth_request /_auth;
            corelog_api core_log \$ts;
        }

        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/identity;
        }

        location ~ ^/token/core-log/(?<ts>[^/]*)\$ {
            corelog_auth_request /_token;
            corelog_api core_log \$ts;
        }

        location = /_token {
            internal;
            corelog_token_check bearer;
        }
    }

    # the identity service: any caller is account $acc
    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /identity {
            add_header X-Corelog-Account $acc;
            return 204;
        }
    }
EOF
$t->run;

sub req {
    my ($prefix) = @_;
    return (POST => "$prefix/core-log/$ts",
        headers => { Authorization => 'Bearer clg_' . ('ab' x 32),
                     'Content-Type' => 'application/json' },
        body => encode_json({ status => 200, method => 'GET',
                              elapsedTime => 1,
                              corePathnameId => Corelog::Test::uuid(),
                              requestId => Corelog::Test::uuid(),
                              responseId => Corelog::Test::uuid() }));
}

sub waited {
    my ($re) = @_;
    my @n = $t->error_log =~ /$re/g;
    return scalar @n;
}

subtest 'a write waits its half of corelog_query_timeout, not the connect timeout' => sub {
    my $start = time;
    my $r = $t->http(req(''), timeout => 30);
    my $took = time - $start;
    is($r->{status}, 503, 'status 503');
    is($r->{json}{name}, 'ServiceUnavailable', 'JSON error');
    is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
    cmp_ok($took, '>=', 0.45, 'after its wait in the queue (500 ms)');
    cmp_ok($took, '<', 0.5 + 0.4 * Corelog::Test::timeout_factor(),
           'and not the whole corelog_query_timeout');
    cmp_ok($took, '<', 10, 'long before the 60 s connect timeout');
    is(waited(qr/corelog: write waited 500 ms for a PostgreSQL connection, answering 503/),
       1, 'the wait timer said so');
};

subtest 'a token lookup waits the same' => sub {
    sleep 1.1;    # the "waited" line is logged at most once a second
    my $start = time;
    my $r = $t->http(req('/token'), timeout => 30);
    my $took = time - $start;
    is($r->{status}, 503, 'status 503');
    like($r->{json}{message} // '', qr/token store is unavailable/,
         'the token store is unavailable');
    cmp_ok($took, '<', 10, 'long before the 60 s connect timeout');
    is(waited(qr/corelog: token lookup waited 500 ms for a PostgreSQL connection/),
       1, 'the wait timer said so');
};

subtest 'a reload is not held by the pending connect' => sub {
    my @old = $t->worker_pids;
    ok(@old, 'a worker runs');
    my $start = time;
    ok($t->reload(wait_old => 0), 'new worker started');
    my $gone;
    until ($gone = !grep { kill 0, $_ } @old) {
        last if time - $start > 20;
        sleep 0.05;
    }
    ok($gone, 'the old worker exited');
    cmp_ok(time - $start, '<', 5, 'within seconds, not at the connect timeout');
};

subtest 'a write queued when a graceful stop begins still gets its answer' => sub {
    my $sock = $t->http_start(req(''));
    sleep 0.3;
    my @w = $t->worker_pids;
    kill 'QUIT', @w;
    my $r = $t->http_finish($sock);
    is($r->{status}, 503, 'its 503 after the wait');
    my $gone;
    for (1 .. 100) { last if $gone = !grep { kill 0, $_ } @w; sleep 0.05 }
    ok($gone, 'then the worker exits');
};

my $start = time;
$t->stop;
cmp_ok(time - $start, '<', 5, 'nginx stops at once');

unlike($t->error_log, qr/\[alert\]|open socket|exited on signal/,
       'no alert, no socket left, no crash');

$t->done;
done_testing;
