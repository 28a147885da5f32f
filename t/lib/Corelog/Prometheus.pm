package Corelog::Prometheus;

# Real Prometheus tools for the tests (Debian's prometheus package):
# promtool's lint of a text exposition, and a Prometheus server of the
# test's own that scrapes nginx and answers PromQL.
#
#   my ($rc, $out) = Corelog::Prometheus::promtool_check($text, $t->dir);
#
#   my $p = Corelog::Prometheus->start(dir => $t->dir,
#                                      targets => ['127.0.0.1:' . $t->port],
#                                      metrics_path => '/status',
#                                      params => { format => ['prometheus'] },
#                                      interval => '1s');
#   my $tg = $p->wait_scrape(15);      # a target's hash of /api/v1/targets
#   is($tg->{health}, 'up') or diag($tg->{lastError});
#   is($p->wait_value('corelog_x_total', 7, 5), 7);
#   $p->value('up{job="corelog"}');   # one sample's value, or undef
#   $p->query($promql);                # /api/v1/query's answer, decoded
#   $p->targets;                       # /api/v1/targets's answer, decoded
#   $p->target('127.0.0.1:8080');      # that target's hash (or the first)
#   $p->wait_scrape(15, '127.0.0.1:8080');    # that target up
#   $p->stop;                          # also on DESTROY and at exit
#   $t->done;                          # after stop: it removes the dir
#
# Options of start: dir (required: its files go to <dir>/prometheus/),
# targets (required, "host:port" each), metrics_path (/metrics), params
# ({ name => [values] } or { name => value }: the scrape's query string),
# interval (1s; also the scrape timeout), job (corelog).
#
# The server listens on 127.0.0.1 and a free port of the harness (never
# 9090: a system Prometheus may hold it), as the current user (Prometheus
# does not refuse root).  Its files: prometheus.yml, data/ (the TSDB),
# prometheus.log (its stdout and stderr), prometheus.pid (for make clean).
# It is our child, stopped (TERM, then KILL) by stop, DESTROY or at exit,
# only by the process that started it (not by a forked child's exit); and
# the kernel sends it TERM if the test process dies without cleaning up
# (SIGKILL): PR_SET_PDEATHSIG, where sys/syscall.ph has prctl.
#
# Prometheus is ready about 0.2 s after start, but 2.42 adds the targets
# of its configuration only some 5 s later (its discovery manager sends
# updates every 5 s; no flag changes that): the first scrape comes 5 to
# 6 s after start, so wait_scrape's timeout must allow for that.
# Its waits (start, wait_scrape, wait_value, stop) and HTTP timeouts are
# multiplied by TEST_CORELOG_TIMEOUT_FACTOR.
#
# TEST_CORELOG_PROMETHEUS and TEST_CORELOG_PROMTOOL name other binaries.

use strict;
use warnings;

use Errno qw(EINTR);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Scalar::Util qw(refaddr weaken);
use Time::HiRes qw(sleep time);

use Corelog::Test;

our $PROMETHEUS = $ENV{TEST_CORELOG_PROMETHEUS} // '/usr/bin/prometheus';
our $PROMTOOL   = $ENV{TEST_CORELOG_PROMTOOL} // '/usr/bin/promtool';

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

my %LIVE;    # refaddr => weakened object, for END-time cleanup
my $checks = 0;

# Whether both programs can be run here (for skip_all).
sub available { -x $PROMETHEUS && -x $PROMTOOL }

sub _t { $_[0] * Corelog::Test::timeout_factor() }

###########################################################################
# promtool

# promtool_check($text, $dir): `promtool check metrics < file`, the text
# written to a file in $dir (kept there, promtool-N.prom) or, without $dir,
# in a temporary directory.  Returns (exit code, stdout and stderr).
# promtool 2.42's exit codes:
#   0  the text parses and has no lint problems (an empty text too)
#   1  it does not parse ("error while linting: text format parsing error
#      in line N: ..."): a second TYPE line for a name, a value that is no
#      number, no newline at the end...
#   3  it parses but has lint problems, one line each ("<name> counter
#      metrics should have "_total" suffix", "<name> no help text"...)
# It does not notice a series given twice (the same name and labels).
sub promtool_check {
    my ($text, $dir) = @_;

    $dir //= tempdir('corelog-promtool-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $file = "$dir/promtool-" . ++$checks . '.prom';
    Corelog::Test::_write($file, $text);

    # the harness's _run (stdout and stderr into one text) uses only the
    # dir of its object; its stdin is /dev/null, so sh redirects it
    return Corelog::Test::_run({ dir => $dir },
                               ['sh', '-c', 'exec "$0" check metrics <"$1"',
                                $PROMTOOL, $file]);
}

###########################################################################
# the server

sub start {
    my ($class, %opt) = @_;

    my $dir = $opt{dir} // die "Corelog::Prometheus->start: no dir\n";
    my $targets = $opt{targets}
        // die "Corelog::Prometheus->start: no targets\n";

    my $d = "$dir/prometheus";
    make_path("$d/data");

    my $self = bless {
        dir       => $d,
        ports     => [],
        owner_pid => $$,
        job       => $opt{job} // 'corelog',
    }, $class;

    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};

    # a port of the harness's range, reserved against parallel test files
    # (its file in t/tmp/ports/ is removed by stop)
    $self->{port} = $self->Corelog::Test::_free_port;

    my $interval = $opt{interval} // '1s';
    my $params = join '', map {
        my $v = $opt{params}{$_};
        '      ' . _y($_) . ': ['
        . join(', ', map { _y($_) } ref $v ? @$v : $v) . "]\n"
    } sort keys %{$opt{params} // {}};
    $params = "    params:\n$params" if $params ne '';

    # YAML, with every string written as JSON (a YAML double-quoted string)
    Corelog::Test::_write("$d/prometheus.yml", <<"EOF");
# written by Corelog::Prometheus
global:
  scrape_interval: ${\ _y($interval)}
  scrape_timeout: ${\ _y($interval)}
  evaluation_interval: ${\ _y($interval)}
scrape_configs:
  - job_name: ${\ _y($self->{job})}
    metrics_path: ${\ _y($opt{metrics_path} // '/metrics')}
$params    static_configs:
      - targets: [${\ join ', ', map { _y($_) } @$targets}]
EOF

    my @cmd = ($PROMETHEUS,
               "--config.file=$d/prometheus.yml",
               "--storage.tsdb.path=$d/data",
               '--storage.tsdb.retention.time=1d',
               "--web.listen-address=127.0.0.1:$self->{port}",
               '--log.level=info');

    my $parent = $$;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        _die_with_parent($parent);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/prometheus.log" or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings q(exec); exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    Corelog::Test::_write("$d/prometheus.pid", "$pid\n");

    # /-/ready answers 503 until the TSDB is open and the configuration
    # loaded (about 0.2 s here)
    my $deadline = time + _t(20);
    while (1) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{pid};
            die "prometheus exited at start (status $?)\n" . $self->_log_tail;
        }
        my $r = $self->_get('/-/ready', timeout => 1);
        last if $r->{status} == 200;
        die "prometheus not ready in " . _t(20) . " s\n" . $self->_log_tail
            if time > $deadline;
        sleep 0.05;
    }

    return $self;
}

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub dir  { $_[0]{dir} }
sub url  { "http://127.0.0.1:$_[0]{port}" }
sub log  { Corelog::Test::_slurp("$_[0]{dir}/prometheus.log") // '' }

sub _log_tail { "prometheus.log:\n" . Corelog::Test::_tail($_[0]->log) }

# a string as YAML: JSON's double-quoted strings are YAML's
sub _y { $JSON->encode("$_[0]") }

sub _uri_escape {
    my $s = shift;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# GET over HTTP/1.0 (the answer ends with the connection), parsed by the
# harness: { status, headers, body, json, error }
sub _get {
    my ($self, $uri, %o) = @_;

    my $timeout = _t($o{timeout} // 10);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{port}, Proto => 'tcp',
                                  Timeout => $timeout)
        or return { status => 0, error => "connect: $@" };
    syswrite $s, "GET $uri HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";

    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    my $raw = '';
    while (1) {
        my $left = $deadline - time;
        last if $left <= 0 || !$sel->can_read($left);
        my $n = sysread $s, $raw, 65536, length $raw;
        next if !defined $n && $! == EINTR;
        last unless $n;
    }
    close $s;

    return Corelog::Test::_parse_response($raw, 'GET');
}

# The decoded JSON answer of $uri, whatever its status (the API answers
# errors in JSON too: { status => 'error', errorType, error }); dies when
# there is none.
sub _api {
    my ($self, $uri) = @_;
    my $r = $self->_get($uri);
    return $r->{json} if ref $r->{json} eq 'HASH';
    die "prometheus: GET $uri: "
        . ($r->{error} // "status $r->{status}: $r->{body}") . "\n";
}

# /api/v1/query?query=$promql (an instant query, now), decoded.
sub query {
    my ($self, $promql) = @_;
    return $self->_api('/api/v1/query?query=' . _uri_escape($promql));
}

# The value of the single sample $promql gives (a number), undef if it
# gives none; dies on a query error or on more than one sample.
sub value {
    my ($self, $promql) = @_;
    my $q = $self->query($promql);
    die "prometheus: $promql: $q->{errorType}: $q->{error}\n"
        if ($q->{status} // '') ne 'success';

    my $data = $q->{data};
    return $data->{result}[1] + 0 if $data->{resultType} eq 'scalar';

    my @r = @{$data->{result} // []};
    return undef unless @r;
    die "prometheus: $promql: " . scalar(@r) . " samples, not one: "
        . $JSON->encode(\@r) . "\n" if @r > 1;
    return $r[0]{value}[1] + 0;
}

# Polls value($promql) until it equals $want (numerically) or $timeout
# seconds (default 10) have passed; returns the last value (maybe undef).
sub wait_value {
    my ($self, $promql, $want, $timeout) = @_;
    my $deadline = time + _t($timeout // 10);
    while (1) {
        my $v = $self->value($promql);
        return $v if (defined $v && $v == $want) || time > $deadline;
        sleep 0.1;
    }
}

# /api/v1/targets, decoded: data.activeTargets has a hash per target with
# labels (job, instance), scrapeUrl, health (unknown, up, down), lastError
# and lastScrape ("0001-01-01T00:00:00Z" before the first scrape).
sub targets {
    my $self = shift;
    return $self->_api('/api/v1/targets');
}

# The active target of that instance ("host:port"), or the first one;
# undef when there is none (yet).
sub target {
    my ($self, $instance) = @_;
    my @t = @{$self->targets->{data}{activeTargets} // []};
    @t = grep { ($_->{labels}{instance} // '') eq $instance } @t
        if defined $instance;
    return $t[0];
}

sub _scraped { ($_[0]{lastScrape} // '0001') !~ /^0001-/ }

# Waits until the target (of that instance, or any) has been scraped and
# is up, at most $timeout seconds (default 15: see the top); returns its
# hash, or else the last one seen (health down, lastError saying why), or
# undef when there was no target at all.
sub wait_scrape {
    my ($self, $timeout, $instance) = @_;
    my $deadline = time + _t($timeout // 15);
    my $last;
    while (1) {
        my @t = @{$self->targets->{data}{activeTargets} // []};
        @t = grep { ($_->{labels}{instance} // '') eq $instance } @t
            if defined $instance;
        my ($up) = grep { $_->{health} eq 'up' && _scraped($_) } @t;
        return $up if $up;
        $last = (grep { _scraped($_) } @t)[0] // $t[0] // $last;
        return $last if time > $deadline;
        sleep 0.1;
    }
}

# SIGTERM, then SIGKILL if it has not exited in 10 s.
sub stop {
    my $self = shift;
    return $self if $self->{owner_pid} != $$;

    if (my $pid = delete $self->{pid}) {
        # _wait_gone reaps our child (a zombie answers kill 0)
        kill 'TERM', $pid;
        unless (Corelog::Test::_wait_gone($pid, _t(10))) {
            kill 'KILL', $pid;
            Corelog::Test::_wait_gone($pid, 5);
        }
        unlink "$self->{dir}/prometheus.pid";
    }

    unlink @{$self->{ports}};
    @{$self->{ports}} = ();
    delete $LIVE{refaddr $self};
    return $self;
}

sub DESTROY {
    local ($@, $!, $?);
    eval { $_[0]->stop };
}

END {
    local $?;
    for my $p (grep { defined } values %LIVE) {
        eval { $p->stop; 1 } or print STDERR "# prometheus cleanup: $@";
    }
}

###########################################################################
# small helpers

# In the child before exec: TERM when the parent dies (prctl
# PR_SET_PDEATHSIG, kept across exec), where Perl knows prctl's number; a
# parent gone already (before prctl) means exit at once.
sub _die_with_parent {
    my $parent = shift;
    # do, not require: its subs go to the package that first compiles it
    my $nr = eval { do 'sys/syscall.ph'; SYS_prctl() } // return;
    syscall($nr, 1, POSIX::SIGTERM(), 0, 0, 0);
    POSIX::_exit(1) if getppid != $parent;
}

1;
