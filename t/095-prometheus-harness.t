#!/usr/bin/perl
# The Prometheus harness itself (Corelog::Prometheus), with plain nginx
# serving a fixed exposition: promtool passes a good one and fails bad ones
# (so a check with it can fail), a real Prometheus scrapes nginx with the
# params it is given and answers PromQL, a target that fails says why, and
# the server never outlives the test process (a die, a SIGKILL), nor dies
# of a forked child's exit.  No module, no PostgreSQL.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use Corelog::Test;
use Corelog::Prometheus;

plan skip_all => "no $Corelog::Prometheus::PROMETHEUS or "
               . "$Corelog::Prometheus::PROMTOOL (scripts/deps.sh)"
    unless Corelog::Prometheus::available();

my $good = <<'EOF';
# HELP corelog_harness_test_total A counter the harness test serves.
# TYPE corelog_harness_test_total counter
corelog_harness_test_total 7
EOF

# nginx's quoted string: \, " and newlines escaped
sub nginx_string {
    my $s = shift;
    $s =~ s/(["\\])/\\$1/g;
    $s =~ s/\n/\\n/g;
    return qq{"$s"};
}

my $t = Corelog::Test->new(pg => 0);
my $body = nginx_string($good);

# port: the exposition, only with ?format=prometheus (as the status
# endpoint); port2: 404 for everything, a target that fails
$t->write_conf(<<"EOF", no_module => 1, no_postgres => 1);
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /metrics {
            default_type "text/plain; version=0.0.4";
            if (\$arg_format != "prometheus") {
                return 404;
            }
            return 200 $body;
        }
    }
    server {
        listen 127.0.0.1:%%PORT2%%;
        location / { return 404; }
    }
EOF
$t->run;

# promtool on what nginx serves
my $r = $t->http(GET => '/metrics?format=prometheus');
is($r->{body}, $good, 'nginx serves the exposition');
my ($rc, $out) = Corelog::Prometheus::promtool_check($r->{body}, $t->dir);
is($rc, 0, 'promtool check metrics: a good exposition passes') or diag($out);

# promtool fails bad ones: a lint problem (3), a parse error (1)
my @bad = (
    [ 'a counter without _total', 3,
      qr/corelog_harness_test counter metrics should have "_total" suffix/,
      "# HELP corelog_harness_test A counter.\n"
      . "# TYPE corelog_harness_test counter\ncorelog_harness_test 7\n" ],
    [ 'no HELP', 3, qr/corelog_harness_test_total no help text/,
      "# TYPE corelog_harness_test_total counter\n"
      . "corelog_harness_test_total 7\n" ],
    [ 'a second TYPE line', 1,
      qr/second TYPE line for metric name "corelog_harness_test_total"/,
      $good =~ s/^(# TYPE .*\n)/$1$1/mr ],
    [ 'no newline at the end', 1, qr/unexpected end of input stream/,
      $good =~ s/\n\z//r ],
);
for my $b (@bad) {
    my ($name, $want_rc, $want_out, $text) = @$b;
    ($rc, $out) = Corelog::Prometheus::promtool_check($text, $t->dir);
    is($rc, $want_rc, "promtool fails $name: exit $want_rc");
    like($out, $want_out, "promtool fails $name: says why");
}

# a real Prometheus scraping nginx
my $inst  = '127.0.0.1:' . $t->port;
my $inst2 = '127.0.0.1:' . $t->port2;
my $t0 = time;
my $p = Corelog::Prometheus->start(dir => $t->dir, targets => [$inst, $inst2],
                                   metrics_path => '/metrics',
                                   params => { format => ['prometheus'] },
                                   interval => '1s');
ok(-s $p->dir . '/prometheus.yml', 'prometheus.yml written');
isnt($p->port, 9090, 'Prometheus on a port of its own: ' . $p->port);
note(sprintf 'prometheus ready in %.1f s', time - $t0);

my $tg = $p->wait_scrape(15, $inst);
is($tg && $tg->{health}, 'up', "target $inst is up")
    or diag(explain $tg);
note(sprintf 'first scrape %.1f s after start', time - $t0);
is($tg && $tg->{scrapeUrl}, "http://$inst/metrics?format=prometheus",
   'the params are in the scrape URL');
like($t->access_log,
     qr{"GET /metrics\?format=prometheus HTTP/1\.1" 200 .*"Prometheus/},
     'nginx saw them');

is($p->wait_value('corelog_harness_test_total', 7, 5), 7,
   'the value arrived: corelog_harness_test_total 7');
is($p->value("up{job=\"corelog\",instance=\"$inst\"}"), 1, 'up is 1');
is($p->value('corelog_harness_test_total{job="nope"}'), undef,
   'no sample: undef');
my $q = $p->query('corelog_harness_test_total');
is($q->{data}{result}[0]{metric}{instance}, $inst, 'query: the labels');

ok(!eval { $p->value('sum(') }, 'a PromQL error dies');
like($@, qr/bad_data: .*parse error/, '... with the error');

# the failing target says why
my $deadline = time + 5 * Corelog::Test::timeout_factor();
my $down;
until ((($down = $p->target($inst2)) && $down->{lastError})
       || time > $deadline) {
    sleep 0.1;
}
is($down && $down->{health}, 'down', "target $inst2 is down");
like($down && $down->{lastError}, qr/404/, 'lastError says 404')
    or diag(explain $down);
is($p->value("up{instance=\"$inst2\"}"), 0, 'its up is 0');

# a forked child's exit leaves it running
my $kid = fork // die "fork: $!";
exit 0 unless $kid;
waitpid $kid, 0;
is(eval { $p->value("up{instance=\"$inst\"}") }, 1,
   "a forked child's exit leaves Prometheus running") or diag($@);

# stop
my $pid = $p->pid;
my $port = $p->port;
$p->stop;
ok(!kill(0, $pid), 'stop: the process is gone');
ok(!Corelog::Test::_can_connect($port), 'stop: the port is closed');
ok(!-e $p->dir . '/prometheus.pid', 'stop: no pid file');

# a test process that dies, or is killed, leaves no Prometheus behind
sub running {
    my $pid = shift;
    my $stat = Corelog::Test::_slurp("/proc/$pid/stat") // return 0;
    return $stat !~ /^\d+ \(.*\) Z /s;    # an orphan's zombie is no process
}

for my $how (['dies', 'die "on purpose\n"'],
             ['is killed (SIGKILL)', 'kill KILL => $$']) {
    my ($name, $end) = @$how;
    (my $sub = $name) =~ s/\W+/-/g;
    my $dir = $t->dir . "/$sub";
    mkdir $dir;
    my $code = 'open STDERR, ">", "$ARGV[0]/stderr"; '
             . 'my $p = Corelog::Prometheus->start(dir => $ARGV[0], '
             . 'targets => ["127.0.0.1:1"]); '
             . 'open my $fh, ">", "$ARGV[0]/started"; '
             . 'print $fh $p->pid, " ", $p->port; close $fh; ' . $end;
    system $^X, "-I$FindBin::Bin/lib", '-MCorelog::Prometheus', '-e', $code,
           $dir;
    my ($pid, $port) = split ' ', Corelog::Test::_slurp("$dir/started") // '';
    ok($pid, "a test process that $name started Prometheus") or next;

    my $until = time + 10 * Corelog::Test::timeout_factor();
    sleep 0.05 while running($pid) && time < $until;
    ok(!running($pid), "a test process that $name leaves no Prometheus")
        or kill KILL => $pid;
    # a killed process leaves its port's reservation
    unlink "$Corelog::Test::TMP/ports/$port";
}

$t->done;
done_testing;
