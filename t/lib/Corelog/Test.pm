package Corelog::Test;

# Test harness for ngx_http_corelog_module (Test::Nginx is not used).
#
# Each Corelog::Test object owns a temporary directory t/tmp/<test>-XXXXXX
# holding a throwaway PostgreSQL cluster (pg/, started on a free port) and
# an nginx prefix (nginx.conf, error.log, nginx.pid, temp paths).  Typical
# use:
#
#   use FindBin; use lib "$FindBin::Bin/lib";
#   use Test::More; use Corelog::Test;
#
#   my $t = Corelog::Test->new;
#   $t->write_conf(<<'EOF');
#       server {
#           listen 127.0.0.1:%%PORT%%;
#           location / { ... }
#       }
#   EOF
#   $t->run;
#   my $r = $t->http(POST => '/core-log/x', headers => {...}, body => '{}');
#   is($r->{status}, 201);
#   $t->done;          # stops nginx, checks the error log (one test)
#   done_testing;
#
# Environment: TEST_CORELOG_KEEP=1 keeps the temporary directory;
# TEST_CORELOG_NGINX, TEST_CORELOG_MODULE, TEST_CORELOG_PG_BINDIR override
# the nginx binary, the module .so and the PostgreSQL bin directory;
# TEST_CORELOG_DEBUG_BUILD the directory of use_debug_build()'s.
#
# TEST_CORELOG_VALGRIND=1 (`make valgrind`) runs nginx under valgrind's
# memcheck (the master, its daemonising parent and every worker, each
# logging to <dir>/valgrind.<pid>.log, with t/valgrind.supp), and done()
# then checks those logs as one more test, "valgrind: no memory errors":
# it fails on an error (invalid read/write/free, use of an uninitialised
# value, a definite leak, ...) whose stack mentions ngx_http_corelog,
# libjansson or libpq, and keeps the directory.  Other unsuppressed errors
# are only shown (diag).  The harness's own waits (HTTP client timeouts,
# nginx start, reload and stop) are multiplied by TEST_CORELOG_TIMEOUT_FACTOR
# (default 5 under valgrind, else 1); what the tests assert is unchanged.
# TEST_CORELOG_VALGRIND_OPTS adds valgrind options (after the harness's:
# e.g. "--show-leak-kinds=all" to see the other leak kinds in the logs,
# with TEST_CORELOG_KEEP=1); TEST_CORELOG_VALGRIND_BIN names valgrind.

use strict;
use warnings;

use Cwd qw(abs_path);
use DBI;
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use Fcntl qw(O_CREAT O_EXCL O_WRONLY);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Scalar::Util qw(refaddr weaken);
use Test::More ();
use Time::HiRes qw(sleep time);

our $ROOT   = abs_path(dirname(abs_path(__FILE__)) . '/../../..');
our $TMP    = "$ROOT/t/tmp";
our $NGINX  = $ENV{TEST_CORELOG_NGINX} // '/usr/sbin/nginx';
our $MODULE = $ENV{TEST_CORELOG_MODULE}
    // "$ROOT/objs/ngx_http_corelog_module.so";

our $VALGRIND = $ENV{TEST_CORELOG_VALGRIND} ? 1 : 0;
our $TIMEOUT_FACTOR = $ENV{TEST_CORELOG_TIMEOUT_FACTOR} || ($VALGRIND ? 5 : 1);
our $VALGRIND_SUPP = "$ROOT/t/valgrind.supp";

my $IS_ROOT = $> == 0;
my $JSON    = JSON::PP->new->utf8->canonical->allow_nonref;

my %LIVE;    # refaddr => weakened object, for END-time cleanup

# A client must survive writing to a connection that nginx has closed.
$SIG{PIPE} = 'IGNORE';

# Ctrl-C or a prove timeout: run END (cleanup) instead of leaving nginx and
# PostgreSQL processes behind.
for my $sig (qw(INT TERM)) {
    $SIG{$sig} ||= sub { print STDERR "# caught SIG$sig, cleaning up\n";
                         exit 1 };
}

###########################################################################
# construction

# Options:
#   pg_start => 0   initdb and load the schema, but leave PostgreSQL stopped
#   pg       => 0   no PostgreSQL at all (nginx-only tests)
#   pg_conf  => str extra postgresql.conf lines
#   pg_listen => addr  PostgreSQL's TCP address (default 127.0.0.1; all of
#                   127/8 is the loopback on Linux)
#   pg_port  => port  PostgreSQL's port, not a new one: a second cluster on
#                   another address and the same port as the first
sub new {
    my ($class, %opt) = @_;

    my $self = bless {
        opt       => \%opt,
        owner_pid => $$,
        allow     => {},
        ports     => [],
    }, $class;

    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};

    $self->_make_dir;

    $self->{port}    = $self->_free_port;
    $self->{port2}   = $self->_free_port;
    $self->{status_port} = $self->_free_port;
    $self->{pg_port} = $opt{pg_port} // $self->_free_port;
    $self->{pg_host} = $opt{pg_listen} // '127.0.0.1';

    if ($opt{pg} // 1) {
        $self->_pg_init;
        $self->pg_start;
        $self->_pg_create_db;
        $self->pg_stop if defined $opt{pg_start} && !$opt{pg_start};
    }

    return $self;
}

sub dir     { $_[0]{dir} }
sub port    { $_[0]{port} }
sub port2   { $_[0]{port2} }
sub status_port { $_[0]{status_port} }
sub pg_port { $_[0]{pg_port} }
sub pg_host { $_[0]{pg_host} }

sub uuid {
    my $bytes = '';
    if (open my $fh, '<:raw', '/dev/urandom') {
        read $fh, $bytes, 16;
    }
    $bytes = pack 'C16', map { int rand 256 } 1 .. 16
        if length $bytes != 16;
    my @b = unpack 'C16', $bytes;
    $b[6] = ($b[6] & 0x0f) | 0x40;    # version 4
    $b[8] = ($b[8] & 0x3f) | 0x80;    # RFC 4122 variant
    return sprintf '%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-'
                 . '%02x%02x%02x%02x%02x%02x', @b;
}

sub _make_dir {
    my $self = shift;

    make_path($TMP);
    chmod 0755, $TMP;

    my $base = $TMP;

    # As root, nginx workers (nobody) and PostgreSQL (postgres) must reach
    # the directory: every path component must be traversable by others.
    if ($IS_ROOT && !_world_traversable($TMP)) {
        $base = File::Spec->tmpdir;
        Test::More::diag("$TMP is not world-traversable, using $base");
    }

    my $name = basename($0);
    $name =~ s/\.t$//;
    $name =~ s/[^A-Za-z0-9_.-]/_/g;

    $self->{dir} = tempdir("$name-XXXXXX", DIR => $base);
    chmod 0777, $self->{dir};
}

sub _world_traversable {
    my $path = shift;
    while (1) {
        my @st = stat $path or return 0;
        return 0 unless $st[2] & 01;
        last if $path eq '/';
        $path = dirname($path);
    }
    return 1;
}

# A free TCP port below the kernel's ephemeral range (so that the clients'
# outgoing connections never take it), reserved against parallel test
# files by an O_EXCL file in t/tmp/ports/.
sub _free_port {
    my $self = shift;

    my ($lo) = split ' ', _slurp('/proc/sys/net/ipv4/ip_local_port_range')
                          || '32768';
    my ($min, $max) = $lo >= 12000 ? ($lo - 10000, $lo - 1) : (20000, 29999);

    my $dir = "$TMP/ports";
    make_path($dir);

    for (1 .. 1000) {
        my $port = $min + int rand($max - $min + 1);
        my $file = "$dir/$port";

        # A reservation older than a day was left by a killed test.
        unlink $file if -e $file && -M $file > 1;

        sysopen my $fh, $file, O_CREAT | O_EXCL | O_WRONLY or next;
        print $fh "$$\n";
        close $fh;

        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1);
        if (!$s) {
            unlink $file;
            next;
        }
        close $s;

        push @{$self->{ports}}, $file;
        return $port;
    }

    die "no free TCP port found in $min-$max\n";
}

###########################################################################
# PostgreSQL

sub _pg_bindir {
    return $ENV{TEST_CORELOG_PG_BINDIR} if $ENV{TEST_CORELOG_PG_BINDIR};

    my @dirs = map { $_->[1] }
               sort { $a->[0] <=> $b->[0] }
               map { m{/(\d+)/bin$} ? [$1, $_] : () }
               grep { -x "$_/initdb" } glob '/usr/lib/postgresql/*/bin';
    return $dirs[-1] if @dirs;

    my $dir = `pg_config --bindir 2>/dev/null` // '';
    chomp $dir;
    return $dir if $dir ne '' && -x "$dir/initdb";

    die "PostgreSQL server binaries (initdb) not found; install postgresql\n";
}

# PostgreSQL refuses to run as root: run its programs as "postgres" then.
sub _as_pg {
    return () unless $IS_ROOT;
    die "running as root but there is no \"postgres\" user\n"
        unless defined getpwnam 'postgres';
    return ('runuser', '-u', 'postgres', '--');
}

sub _pg_init {
    my $self = shift;

    my $bin  = $self->{pg_bin} = _pg_bindir();
    my $data = $self->{pg_data} = "$self->{dir}/pg";
    $self->{pg_logfile} = "$self->{dir}/postgres.log";

    my $sockdir = $self->_pg_sockdir;

    my ($rc, $out) = $self->_run([_as_pg(), "$bin/initdb", '-D', $data,
                                  '-U', 'postgres', '--auth=trust',
                                  '-E', 'UTF8', '--locale=C', '--no-sync']);
    die "initdb failed (exit $rc):\n$out" if $rc;

    my $extra = $self->{opt}{pg_conf} // '';

    _append("$data/postgresql.conf", <<"EOF");

# Corelog::Test: a private, throwaway cluster
listen_addresses = '$self->{pg_host}'
port = $self->{pg_port}
unix_socket_directories = '$sockdir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
$extra
EOF

    # a cluster on another loopback address: its clients may come from it
    _append("$data/pg_hba.conf", "host all all 127.0.0.0/8 trust\n")
        if $self->{pg_host} ne '127.0.0.1';
}

# The unix socket path is limited to ~107 bytes.
sub _pg_sockdir {
    my $self = shift;
    my $sockdir = $self->{dir};
    if (length("$sockdir/.s.PGSQL.$self->{pg_port}") > 100) {
        $sockdir = $self->{pg_sockdir} =
            tempdir('corelog-pg-XXXXXX', DIR => File::Spec->tmpdir);
        chmod 0777, $sockdir;
    }
    return $sockdir;
}

# $s->pg_standby_of($primary): the cluster of $s (made with pg => 0) becomes
# a streaming standby of $primary's, copied with pg_basebackup (-R writes
# primary_conninfo and standby.signal), on $s's own port, and is started.
# Its application_name is "standby" (for synchronous_standby_names).
sub pg_standby_of {
    my ($self, $primary) = @_;

    my $bin  = $self->{pg_bin} = _pg_bindir();
    my $data = $self->{pg_data} = "$self->{dir}/pg";
    $self->{pg_logfile} = "$self->{dir}/postgres.log";
    my $sockdir = $self->_pg_sockdir;

    my ($rc, $out) = $self->_run([_as_pg(), "$bin/pg_basebackup",
                                  '-D', $data, '-R', '-X', 'stream',
                                  '-c', 'fast', '--no-sync', '-d',
                                  "host=$primary->{pg_host} "
                                  . "port=$primary->{pg_port} "
                                  . 'user=postgres application_name=standby']);
    die "pg_basebackup failed (exit $rc):\n$out" if $rc;

    _append("$data/postgresql.conf", <<"EOF");

# Corelog::Test: a standby of port $primary->{pg_port}
listen_addresses = '$self->{pg_host}'
port = $self->{pg_port}
unix_socket_directories = '$sockdir'
EOF

    $self->pg_start;
}

# $s->pg_promote: the standby takes writes (pg_ctl promote, waits for it)
sub pg_promote {
    my $self = shift;
    my ($rc, $out) = $self->_run([_as_pg(), "$self->{pg_bin}/pg_ctl",
                                  '-D', $self->{pg_data}, '-w', '-t', '60',
                                  'promote']);
    die "pg_ctl promote failed (exit $rc):\n$out" if $rc;
}

sub _pg_create_db {
    my $self = shift;

    my $dbh = DBI->connect($self->_dsn('postgres'), 'postgres', '',
                           { AutoCommit => 1, RaiseError => 1,
                             PrintError => 0 });
    $dbh->do('CREATE DATABASE corelog');
    $dbh->disconnect;

    $self->dbh->do('CREATE EXTENSION pg_stat_statements');

    $self->migrate('corelog');
}

sub _psql {
    my $self = shift;
    return -x "$self->{pg_bin}/psql" ? "$self->{pg_bin}/psql" : 'psql';
}

sub _conninfo {
    my ($self, $db) = @_;
    (my $conninfo = $self->pg_conninfo) =~ s/dbname=\S+/dbname=$db/;
    return $conninfo;
}

# Applies the schema migrations sql/NNN_*.sql missing in database $db, up
# to number $last (default: all), with scripts/migrate.sh; dies on error,
# else returns its output (a line per migration applied).
sub migrate {
    my ($self, $db, $last) = @_;
    local $ENV{PSQL} = $self->_psql;
    my ($rc, $out) = $self->_run(["$ROOT/scripts/migrate.sh",
                                  $self->_conninfo($db), $last // ()]);
    die "scripts/migrate.sh failed (exit $rc):\n$out" if $rc;
    return $out;
}

# pg_dump --schema-only of the corelog schema in database $db, without the
# lines that differ between two dumps of the same schema (\restrict's
# random key).
sub schema_dump {
    my ($self, $db) = @_;
    my ($rc, $out) = $self->_run(["$self->{pg_bin}/pg_dump", '--schema-only',
                                  '--schema=corelog',
                                  '-d', $self->_conninfo($db)]);
    die "pg_dump failed (exit $rc):\n$out" if $rc;
    $out =~ s/^\\(un)?restrict .*\n//mg;
    return $out;
}

# Runs an SQL file with psql in database $db, in one transaction
# (ON_ERROR_STOP); dies on error.
sub psql_file {
    my ($self, $db, $file) = @_;
    my ($rc, $out) = $self->_run([$self->_psql, '-X', '-q', '-1', '-v',
                                  'ON_ERROR_STOP=1', '-d',
                                  $self->_conninfo($db), '-f', $file]);
    die "psql -f $file failed (exit $rc):\n$out" if $rc;
    return $out;
}

sub _dsn {
    my ($self, $db) = @_;
    return "dbi:Pg:dbname=$db;host=$self->{pg_host};port=$self->{pg_port}";
}

# A minimal server{} with the core-log route behind the built-in Bearer
# token checker, for write_conf() (after the http-level directives).
sub core_log_server {
    return <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth;
            corelog_api core_log $ts;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }
    }
EOF
}

# A server{} with the three routes, behind the built-in token checkers
# (Bearer for core and channel logs, X-Auth-Token for logtanks), and with
# status => 1 a stub_status at /status, for write_conf().
sub routes_server {
    my (%opt) = @_;
    my $status = $opt{status} ? <<'EOF' : '';

        location = /status {
            stub_status;
        }
EOF
    return <<'EOF' . $status . "    }\n";
    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/core-log/(?<ts>[^/]*)$ {
            corelog_auth_request /_auth;
            corelog_api core_log $ts;
        }

        location = /api/v1/log/create {
            corelog_auth_request /_auth;
            corelog_api channel_log;
        }

        location = /v1/logtanks {
            corelog_auth_request /_auth_x;
            corelog_api logtank;
        }

        location = /_auth {
            internal;
            corelog_token_check bearer;
        }

        location = /_auth_x {
            internal;
            corelog_token_check x-auth-token;
        }
EOF
}

# The directory of PostgreSQL's unix socket (for host=<dir> conninfos).
sub pg_socket_dir { $_[0]{pg_sockdir} // $_[0]{dir} }

sub pg_conninfo {
    my $self = shift;
    return "host=$self->{pg_host} port=$self->{pg_port} dbname=corelog "
         . "user=postgres";
}

sub pg_start {
    my $self = shift;
    return if $self->{pg_running};

    my ($rc, $out) = $self->_run([_as_pg(), "$self->{pg_bin}/pg_ctl",
                                  '-D', $self->{pg_data},
                                  '-l', $self->{pg_logfile},
                                  '-w', '-t', '60', 'start']);
    die "pg_ctl start failed (exit $rc):\n$out\n" . _tail($self->pg_log)
        if $rc;

    $self->{pg_running} = 1;
}

sub pg_stop {
    my $self = shift;
    return unless $self->{pg_running};

    if ($self->{dbh}) {
        eval { $self->{dbh}->disconnect };
        delete $self->{dbh};
    }

    my ($rc, $out) = $self->_run([_as_pg(), "$self->{pg_bin}/pg_ctl",
                                  '-D', $self->{pg_data}, '-m', 'fast',
                                  '-w', '-t', '60', 'stop']);
    die "pg_ctl stop failed (exit $rc):\n$out" if $rc;

    $self->{pg_running} = 0;
}

sub pg_restart {
    my $self = shift;
    $self->pg_stop;
    $self->pg_start;
}

sub pg_log { _slurp($_[0]{pg_logfile} // '') // '' }

# AutoCommit, RaiseError; reconnects after pg_stop/pg_start.
sub dbh {
    my $self = shift;

    my $dbh = $self->{dbh};
    return $dbh if $dbh && $dbh->{Active} && $dbh->ping;

    $dbh = DBI->connect($self->_dsn('corelog'), 'postgres', '',
                        { AutoCommit => 1, RaiseError => 1, PrintError => 0,
                          pg_enable_utf8 => 1 });
    $dbh->do('SET client_min_messages = warning');

    return $self->{dbh} = $dbh;
}

# lock_table('corelog.x'): a session of its own holding an ACCESS
# EXCLUSIVE lock on the table, so that nginx's statements on it wait
# (release: $lock->rollback; $lock->disconnect).
sub lock_table {
    my ($self, $table) = @_;
    my $lock = DBI->connect($self->_dsn('corelog'), 'postgres', '',
                            { AutoCommit => 0, RaiseError => 1,
                              PrintError => 0 });
    $lock->do("LOCK TABLE $table IN ACCESS EXCLUSIVE MODE");
    return $lock;
}

# How many of nginx's sessions wait for a lock now.
sub lock_waiters {
    my $self = shift;
    return scalar $self->dbh->selectrow_array(q{
        SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'nginx-corelog'
           AND wait_event_type = 'Lock'});
}

# Waits until one of nginx's sessions waits for a lock (at most 10 s, times
# TEST_CORELOG_TIMEOUT_FACTOR); returns their number, 0 if none came.
sub wait_lock_waiters {
    my $self = shift;
    my $deadline = time + _t(10);
    while (1) {
        my $n = $self->lock_waiters;
        return $n if $n || time > $deadline;
        sleep 0.05;
    }
}

###########################################################################
# fixtures

sub make_account {
    my ($self, $name) = @_;
    return scalar $self->dbh->selectrow_array(
        'INSERT INTO corelog.accounts (name) VALUES (?) RETURNING id',
        undef, $name // 'test');
}

# make_token($account_id, domain => , project => , expires_in => '1 hour',
#            revoked => 1, description => )
sub make_token {
    my ($self, $account_id, %o) = @_;

    my $token = $self->dbh->selectrow_array(
        'SELECT corelog.create_token(?, ?, ?, ?::interval, ?)', undef,
        $account_id, $o{domain}, $o{project}, $o{expires_in},
        $o{description} // 'Corelog::Test');

    $self->dbh->do('SELECT corelog.revoke_token(?)', undef, $token)
        if $o{revoked};

    return $token;
}

# One traffic source with one core pathname, request and response.
sub seed_corelog {
    my ($self, $account_id) = @_;
    my $dbh = $self->dbh;

    my %r;
    $r{account_id} = $account_id;
    ($r{traffic_source_id}) = $dbh->selectrow_array(
        'INSERT INTO corelog.traffic_sources (account_id, name)
         VALUES (?, ?) RETURNING id', undef, $account_id, 'test source');
    ($r{core_pathname_id}) = $dbh->selectrow_array(
        'INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
         VALUES (?, ?) RETURNING id', undef, $r{traffic_source_id}, '/test');
    @r{qw(request_id response_id)} =
        $self->make_request_response($r{traffic_source_id});

    return \%r;
}

sub make_request_response {
    my ($self, $traffic_source_id) = @_;
    my $dbh = $self->dbh;

    my ($req) = $dbh->selectrow_array(
        'INSERT INTO corelog.requests (traffic_source_id, method, url)
         VALUES (?, ?, ?) RETURNING id', undef, $traffic_source_id, 'GET',
        '/test');
    my ($res) = $dbh->selectrow_array(
        'INSERT INTO corelog.responses (traffic_source_id, status)
         VALUES (?, ?) RETURNING id', undef, $traffic_source_id, 200);

    return ($req, $res);
}

# A channel of the account (POST /api/v1/log/create).
sub make_channel {
    my ($self, $account_id, $name) = @_;
    return scalar $self->dbh->selectrow_array(
        'INSERT INTO corelog.channels (account_id, name) VALUES (?, ?)
         RETURNING id', undef, $account_id, $name // 'test channel');
}

# channel_wave($token, $channel, $size): $size channel-log writes for
# http_many, each labelled "w<n>" (n counts on across waves); label_of()
# gives a request's label back.
my $wave_n = 0;

sub channel_wave {
    my ($token, $channel, $size) = @_;
    return [map { [POST => '/api/v1/log/create',
                   headers => { Authorization => "Bearer $token",
                                'Content-Type' => 'application/json' },
                   body => JSON::PP::encode_json({ channel_id => $channel,
                                                   label => 'w' . ++$wave_n })] }
            1 .. $size];
}

sub label_of { JSON::PP::decode_json($_[0][5])->{label} }

# A log group in an account's project, and a log stream in a group
# (POST /v1/logtanks).
sub make_log_group {
    my ($self, $account_id, $project_id, $name) = @_;
    return scalar $self->dbh->selectrow_array(
        'INSERT INTO corelog.log_groups (account_id, project_id, name)
         VALUES (?, ?, ?) RETURNING id', undef, $account_id, $project_id,
        $name // 'test group');
}

sub make_log_stream {
    my ($self, $group_id, $name) = @_;
    return scalar $self->dbh->selectrow_array(
        'INSERT INTO corelog.log_streams (log_group_id, name)
         VALUES (?, ?) RETURNING id', undef, $group_id,
        $name // 'test stream');
}

###########################################################################
# nginx

sub _subst {
    my ($self, $text) = @_;
    $text =~ s/%%PORT2%%/$self->{port2}/g;
    $text =~ s/%%PORT%%/$self->{port}/g;
    $text =~ s/%%PG%%/$self->pg_conninfo/ge;
    $text =~ s/%%DIR%%/$self->{dir}/g;
    return $text;
}

sub _temp_paths {
    my $d = shift->{dir};
    return join '', map { "    ${_}_temp_path \"$d/$_\";\n" }
                    qw(client_body proxy fastcgi uwsgi scgi);
}

# write_conf($http_text, workers => 1, error_log_level => 'info',
#            main => $main_context_text, worker_connections => 1024,
#            no_postgres => 1, no_module => 1)
sub write_conf {
    my ($self, $http, %opt) = @_;
    my $d = $self->{dir};

    my $load = $opt{no_module} ? '' : "load_module \"$MODULE\";\n";
    my $workers = $opt{workers} // 1;
    my $level = $opt{error_log_level} // 'info';
    my $main = $self->_subst($opt{main} // '');
    my $wc = $opt{worker_connections} // 1024;
    my $pg = $opt{no_postgres} ? ''
           : '    corelog_postgres "' . $self->pg_conninfo . "\";\n";
    my $temp = $self->_temp_paths;

    $http = $self->_subst($http);

    _write("$d/nginx.conf", <<"EOF");
# written by Corelog::Test
${load}worker_processes $workers;
error_log "$d/error.log" $level;
pid "$d/nginx.pid";
$main
events {
    worker_connections $wc;
}

http {
    access_log "$d/access.log";
$temp$pg
$http
}
EOF
    return $self;
}

# The shipped conf/nginx.conf, made runnable inside the test directory (its
# JSON access log is $t->access_log, buffered: stop nginx to read it all).
# Options: port (default $t->port), status_port (default $t->status_port),
# conninfo (default pg_conninfo), workers (default 1), error_log_level
# (default notice).
sub write_shipped_conf {
    my ($self, %opt) = @_;
    my $d = $self->{dir};

    my $conf = _slurp("$ROOT/conf/nginx.conf")
        // die "cannot read conf/nginx.conf\n";

    my $port = $opt{port} // $self->{port};
    my $status_port = $opt{status_port} // $self->{status_port};
    my $conninfo = $opt{conninfo} // $self->pg_conninfo;
    my $workers = $opt{workers} // 1;
    my $level = $opt{error_log_level} // 'notice';
    my $temp = $self->_temp_paths;

    # [ what, replacement ]: each must match, so that a change of the
    # shipped file cannot silently turn this into a different test.
    my @edits = (
        [ qr/\@MODULE\@/,                    "\"$MODULE\"" ],
        [ qr/\@PORT\@/,                      $port ],
        [ qr/\@STATUS_PORT\@/,               $status_port ],
        [ qr/\@CONNINFO\@/,                  $conninfo ],
        [ qr/^[ \t]*error_log\s+stderr\s+notice;/m,
                                            "error_log \"$d/error.log\" $level;" ],
        [ qr/^[ \t]*pid\s+nginx\.pid;/m,         "pid \"$d/nginx.pid\";" ],
        [ qr/^[ \t]*worker_processes\s+auto;/m, "worker_processes $workers;" ],
        [ qr/(?<=^    access_log )access\.log(?= corelog )/m,
                                            "\"$d/access.log\"" ],
    );

    for my $e (@edits) {
        my ($re, $to) = @$e;
        $conf =~ s/$re/$to/g
            or die "write_shipped_conf: $re not in conf/nginx.conf\n";
    }

    # temp paths at the top of http{}
    $conf =~ s/^(http\s*\{[^\n]*\n)/$1$temp/m
        or die "write_shipped_conf: no http { in conf/nginx.conf\n";

    _write("$d/nginx.conf", $conf);
    return $self;
}

sub nginx_conf { _slurp("$_[0]{dir}/nginx.conf") }

# `nginx -t` on the written configuration: returns (exit code, output).
#   nginx_test_conf(wrap => [ '/bin/sh', '-c', 'ulimit ... && exec "$@"',
#                             'sh' ]): run through that command
sub nginx_test_conf {
    my ($self, %o) = @_;
    my $d = $self->{dir};
    $self->{tested_conf} = 1;
    my %asan = $self->_asan_env;    # ASan block: sanitizer options
    local @ENV{keys %asan} = values %asan;
    return $self->_asan_output(    # ASan block: keeps the output
        $self->_run([@{$o{wrap} // []},
                     $NGINX, '-t', '-p', "$d/", '-c', "$d/nginx.conf",
                     '-e', 'stderr']));
}

sub run {
    my $self = shift;
    my $d = $self->{dir};

    die "run: nginx is running already\n" if $self->{nginx_pid};
    die "run: no $d/nginx.conf (write_conf first)\n" unless -f "$d/nginx.conf";

    $self->{ran} = 1;
    unlink "$d/nginx.pid";

    my @cmd = ($NGINX, '-p', "$d/", '-c', "$d/nginx.conf",
               '-e', "$d/error.log");
    unshift @cmd, $self->_valgrind_cmd if $VALGRIND;

    # Under valgrind the daemonising parent exits (and _run returns) after
    # its leak check; the pid in nginx.pid is the daemon's (valgrind runs
    # inside the process it checks, so the pids are nginx's own).
    my %asan = $self->_asan_env;    # ASan block: sanitizer options
    local @ENV{keys %asan} = values %asan;
    my ($rc, $out) = $self->_run(\@cmd);
    $self->_asan_output($rc, $out);    # ASan block
    die "nginx failed to start (exit $rc):\n$out\n"
        . _tail($self->error_log) if $rc;

    my $deadline = time + ($VALGRIND ? 30 : 5 * $TIMEOUT_FACTOR);
    my $pid;
    until ($pid = $self->_read_pid) {
        die "nginx did not write its pid file\n" . _tail($self->error_log)
            if time > $deadline;
        sleep 0.02;
    }
    $self->{nginx_pid} = $pid;

    # Wait for the main port when the configuration listens on it.
    if ($self->nginx_conf =~ /\b$self->{port}\b/) {
        until (_can_connect($self->{port})) {
            die "nginx does not accept connections on port $self->{port}\n"
                . _tail($self->error_log) if time > $deadline;
            sleep 0.02;
        }
    }

    return $self;
}

sub _valgrind_cmd {
    my $self = shift;
    die "TEST_CORELOG_VALGRIND: no $VALGRIND_SUPP\n" unless -f $VALGRIND_SUPP;
    return ($ENV{TEST_CORELOG_VALGRIND_BIN} // 'valgrind',
            '--tool=memcheck', '--trace-children=yes',
            '--child-silent-after-fork=no', '--num-callers=30',
            '--leak-check=full', '--show-leak-kinds=definite',
            '--errors-for-leak-kinds=definite',
            # no gdbserver FIFOs in /tmp (the workers, nobody, could not
            # remove the ones valgrind made for them as root)
            '--vgdb=no',
            # a worker dlclose()s the module (and so libpq, libjansson)
            # before it exits: without this the leak check's stacks would
            # show "???" for their frames
            '--keep-debuginfo=yes',
            # an uninitialised value that the module allocated and nginx
            # uses (writes to a socket...) names the module's frames only
            # in its origin
            '--track-origins=yes',
            "--suppressions=$VALGRIND_SUPP",
            "--log-file=$self->{dir}/valgrind.%p.log",
            split(' ', $ENV{TEST_CORELOG_VALGRIND_OPTS} // ''));
}

# Seconds scaled by TEST_CORELOG_TIMEOUT_FACTOR (valgrind).
sub _t { $_[0] * $TIMEOUT_FACTOR }

sub timeout_factor { $TIMEOUT_FACTOR }
sub valgrind { $VALGRIND }

sub nginx_pid { $_[0]{nginx_pid} }

sub worker_pids {
    my $self = shift;
    return $self->{nginx_pid} ? _children($self->{nginx_pid}) : ();
}

# SIGHUP; returns true once new worker processes are up (and, unless
# wait_old => 0, the old ones have exited: at most 5 s more), false if the
# reload failed (an [emerg] after the HUP) or no new worker came in 5 s.
# (These waits are multiplied by TEST_CORELOG_TIMEOUT_FACTOR.)
sub reload {
    my ($self, %o) = @_;
    my $pid = $self->{nginx_pid} or die "reload: nginx is not running\n";

    my %old = map { $_ => 1 } _children($pid);
    my $offset = -s "$self->{dir}/error.log" || 0;

    kill 'HUP', $pid or die "reload: kill HUP $pid: $!\n";

    my $deadline = time + _t(5);
    until (grep { !$old{$_} } _children($pid)) {
        return 0 if time > $deadline
                 || substr($self->error_log, $offset) =~ /\[emerg\]/;
        sleep 0.02;
    }

    if ($o{wait_old} // 1) {
        $deadline = time + _t(5);
        while (grep { $old{$_} } _children($pid)) {
            last if time > $deadline;
            sleep 0.02;
        }
    }

    sleep _t(0.1);    # let the new workers initialise
    return 1;
}

# SIGQUIT (graceful); TERM and then KILL if nginx has not exited in 10 s
# (times TEST_CORELOG_TIMEOUT_FACTOR: under valgrind every process runs its
# leak check on the way out).  The master exits after all its workers.
sub stop {
    my $self = shift;
    my $pid = delete $self->{nginx_pid} or return $self;

    my @workers = _children($pid);
    kill 'QUIT', $pid;
    return $self if _wait_gone($pid, _t(10));

    push @{$self->{problems}},
        "nginx did not exit within " . _t(10) . " s of SIGQUIT";
    kill 'TERM', $pid;
    return $self if _wait_gone($pid, _t(3));

    kill 'KILL', $pid, @workers;
    _wait_gone($pid, 3);
    return $self;
}

sub error_log { _slurp("$_[0]{dir}/error.log") // '' }

# $t->wait_log($from, $re, $secs): the error log from offset $from on, once
# it matches $re (or after $secs, times TEST_CORELOG_TIMEOUT_FACTOR)
sub wait_log {
    my ($self, $from, $re, $secs) = @_;
    my $deadline = time + _t($secs);
    while (1) {
        my $log = substr $self->error_log, $from;
        return $log if $log =~ $re || time > $deadline;
        sleep 0.05;
    }
}
sub access_log { _slurp("$_[0]{dir}/access.log") // "" }

sub allow_emerg { $_[0]{allow}{emerg} = 1; $_[0] }
sub allow_crit  { $_[0]{allow}{crit}  = 1; $_[0] }
# a test that kills a worker itself (SIGKILL): "exited on signal 9" is
# expected, and nginx's [alert] of it
sub allow_killed { $_[0]{allow}{killed} = 1; $_[0] }

sub _read_pid {
    my $self = shift;
    my $pid = _slurp("$self->{dir}/nginx.pid") // return;
    return $pid =~ /^(\d+)/ && kill(0, $1) ? $1 : undef;
}

sub _children {
    my $ppid = shift;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $s = _slurp($stat) // next;
        push @kids, $1 if $s =~ /^(\d+) \(.*\) \S+ (\d+) /s && $2 == $ppid;
    }
    return @kids;
}

sub _wait_gone {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (kill 0, $pid) {
        # a child of ours (never for daemonised nginx) must be reaped
        waitpid $pid, POSIX::WNOHANG();
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

sub _can_connect {
    my $port = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

###########################################################################
# HTTP client

# Request options:
#   headers => { name => value } or [ name => value, ... ]; a header whose
#              value is undef is not sent (e.g. Host => undef)
#   body    => bytes; json => data (encoded; Content-Type application/json)
#   raw     => the complete request text to send instead
#   port    => TCP port (default $t->port); timeout => seconds (default 10)
# (client timeouts are multiplied by TEST_CORELOG_TIMEOUT_FACTOR)
sub _build_request {
    my ($self, $method, $uri, %o) = @_;

    return $o{raw} if defined $o{raw};

    my $h = $o{headers} // {};
    my @h = ref $h eq 'ARRAY'
          ? map { [ $h->[2 * $_], $h->[2 * $_ + 1] ] } 0 .. $#$h / 2
          : map { [ $_, $h->{$_} ] } sort keys %$h;
    my %have = map { lc $_->[0] => 1 } @h;

    my $body = $o{body};
    if (exists $o{json}) {
        $body = $JSON->encode($o{json});
        push @h, [ 'Content-Type', 'application/json' ]
            unless $have{'content-type'};
    }
    utf8::encode($body) if defined $body && utf8::is_utf8($body);

    unshift @h, [ Connection => 'close' ] unless $have{connection};
    unshift @h, [ Host => 'localhost' ] unless $have{host};
    push @h, [ 'Content-Length', length $body ]
        if defined $body && !$have{'content-length'}
           && !$have{'transfer-encoding'};

    my $req = "$method $uri HTTP/1.1\r\n";
    $req .= "$_->[0]: $_->[1]\r\n" for grep { defined $_->[1] } @h;
    $req .= "\r\n";
    $req .= $body if defined $body;

    return $req;
}

sub _error_result {
    my ($error, $raw) = @_;
    return { status => 0, headers => {}, body => '', json => undef,
             raw => $raw // '', error => $error };
}

# Connects and sends a request; returns the socket (dies if it cannot
# connect); local_addr => '127.0.0.5' connects from that address.  Read the response with http_finish($sock), or close the socket
# early to simulate a client abort.
sub http_start {
    my ($self, $method, $uri, %o) = @_;

    my $port = $o{port} // $self->{port};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp',
                                  ($o{local_addr} ? (LocalAddr => $o{local_addr})
                                                  : ()),
                                  Timeout => _t($o{timeout} // 10))
        or die "http: cannot connect to 127.0.0.1:$port: $@\n";

    my $req = $self->_build_request($method, $uri, %o);
    while (length $req) {
        my $n = syswrite $s, $req;
        last unless $n;    # nginx closed the connection: read its answer
        substr $req, 0, $n, '';
    }

    ${*$s}{corelog_method} = $method;
    return $s;
}

sub http_finish {
    my ($self, $s, %o) = @_;

    my $method = ${*$s}{corelog_method} // 'GET';
    my $sel = IO::Select->new($s);
    my $deadline = time + _t($o{timeout} // 10);
    my $raw = '';

    while (1) {
        my $left = $deadline - time;
        if ($left <= 0) {
            close $s;
            my $r = _parse_response($raw, $method);
            $r->{error} //= 'timeout';
            return $r;
        }
        next unless $sel->can_read($left);
        my $n = sysread $s, $raw, 65536, length $raw;
        next if !defined $n && $! == EINTR;
        last unless $n;    # EOF (Connection: close) or error (reset)
        last if _complete($raw, $method);    # e.g. keep-alive
    }

    close $s;
    return _parse_response($raw, $method);
}

sub http {
    my ($self, $method, $uri, %o) = @_;
    my $s = eval { $self->http_start($method, $uri, %o) }
        or return _error_result($@);
    return $self->http_finish($s, %o);
}

# http_many([ [method, uri, %opt], ... ], timeout => 30): all connections
# at once, non-blocking; results in the order of the requests.
sub http_many {
    my ($self, $reqs, %o) = @_;

    my (@res, %conn);
    my $rsel = IO::Select->new;
    my $wsel = IO::Select->new;

    for my $i (0 .. $#$reqs) {
        my ($method, $uri, %ro) = @{$reqs->[$i]};
        my $port = $ro{port} // $self->{port};
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp',
                                      Timeout => _t(10));
        if (!$s) {
            $res[$i] = _error_result("cannot connect to port $port: $@");
            next;
        }
        $s->blocking(0);
        $conn{fileno $s} = { i => $i, s => $s, method => $method, in => '',
                             out => $self->_build_request($method, $uri,
                                                          %ro) };
        $rsel->add($s);
        $wsel->add($s);
    }

    my $deadline = time + _t($o{timeout} // 30);

    while ($rsel->count && (my $left = $deadline - time) > 0) {
        my ($r, $w) = IO::Select->select($rsel, $wsel->count ? $wsel : undef,
                                         undef, $left);
        next unless $r || $w;

        for my $s (@{$w // []}) {
            my $c = $conn{fileno $s};
            my $n = syswrite $s, $c->{out};
            if (defined $n) {
                substr $c->{out}, 0, $n, '';
                $wsel->remove($s) unless length $c->{out};
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                $wsel->remove($s);    # closed by nginx: read the answer
            }
        }

        for my $s (@{$r // []}) {
            my $c = $conn{fileno $s};
            my $n = sysread $s, $c->{in}, 65536, length $c->{in};
            next if !defined $n
                    && ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR);
            next if $n && !_complete($c->{in}, $c->{method});
            # EOF or error: this response is complete
            $rsel->remove($s);
            $wsel->remove($s);
            $res[$c->{i}] = _parse_response($c->{in}, $c->{method});
            close $s;
        }
    }

    for my $c (values %conn) {
        next if defined $res[$c->{i}];
        my $r = _parse_response($c->{in}, $c->{method});
        $r->{error} //= 'timeout';
        $res[$c->{i}] = $r;
        close $c->{s};
    }

    return \@res;
}

# Whether $raw holds a whole response that says where it ends (so there is
# no need to wait for the server to close a keep-alive connection).
sub _complete {
    my ($raw, $method) = @_;
    return 0 if index($raw, "\r\n\r\n") < 0;
    my $r = _parse_response($raw, $method);
    return 0 if $r->{error};
    my $h = $r->{headers};
    return $method eq 'HEAD' || $r->{status} =~ /^(?:1|204|304)/
        || defined $h->{'content-length'}
        || ($h->{'transfer-encoding'} // '') =~ /chunked/i;
}

# { status, headers => { lowercased name => value }, body, json, raw,
#   error (only when something went wrong) }
sub _parse_response {
    my ($raw, $method) = @_;

    my $r = { status => 0, headers => {}, body => '', json => undef,
              raw => $raw };
    my $rest = $raw;

    while (1) {
        my $end = index $rest, "\r\n\r\n";
        if ($end < 0) {
            $r->{error} = length $raw ? 'incomplete response header'
                                      : 'empty response';
            return $r;
        }
        my ($line, @lines) = split /\r\n/, substr($rest, 0, $end);
        $rest = substr $rest, $end + 4;

        if ($line !~ m{^HTTP/\d\.\d (\d{3})}) {
            $r->{error} = "bad status line: $line";
            return $r;
        }
        $r->{status} = $1;
        $r->{headers} = {};
        for (@lines) {
            my ($name, $value) = /^([^:]+):\s*(.*?)\s*$/ or next;
            $name = lc $name;
            $r->{headers}{$name} = exists $r->{headers}{$name}
                                 ? "$r->{headers}{$name}, $value" : $value;
        }
        last unless $r->{status} =~ /^1/ && $r->{status} != 101;
    }

    my $h = $r->{headers};

    if ($method eq 'HEAD' || $r->{status} =~ /^(?:1|204|304)/) {
        $rest = '';
    } elsif (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        my $body = '';
        while (1) {
            if ($rest !~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                $r->{error} = 'bad or incomplete chunked body';
                last;
            }
            my $size = hex $1;
            if ($size == 0) {
                $rest =~ s/^(?:[^\r\n]+\r\n)*\r\n//;    # trailer
                last;
            }
            if (length $rest < $size + 2) {
                $r->{error} = 'incomplete chunked body';
                $body .= $rest;
                last;
            }
            $body .= substr $rest, 0, $size;
            substr $rest, 0, $size + 2, '';
        }
        $rest = $body;
    } elsif (defined $h->{'content-length'}) {
        my $len = $h->{'content-length'};
        if (length $rest < $len) {
            $r->{error} = 'short body';
        } else {
            $rest = substr $rest, 0, $len;
        }
    }

    $r->{body} = $rest;
    $r->{json} = eval { $JSON->decode($rest) } if $rest =~ /^\s*[\[{]/;

    return $r;
}

###########################################################################
# checks and cleanup

sub _log_problems {
    my $self = shift;
    my @p = @{$self->{problems} // []};

    my $allow_emerg = $self->{allow}{emerg}
                      || ($self->{tested_conf} && !$self->{ran});

    for my $line (split /\n/, $self->error_log) {
        next if $self->{allow}{killed}
                && $line =~ /\[alert\].* exited on signal 9$/;

        push @p, $line
            if $line =~ /\[alert\]/
            || ($line =~ /\[emerg\]/ && !$allow_emerg)
            || ($line =~ /\[crit\]/ && !$self->{allow}{crit})
            || $line =~ /open socket #\d+ left/
            || $line =~ /exited on signal/;
    }

    return @p;
}

# Stop nginx, check its error log (one Test::More test, so call it before
# done_testing; under valgrind a second one, the valgrind logs), stop
# PostgreSQL and remove the directory.
sub done {
    my $self = shift;
    return if $self->{done}++;
    $self->_check('nginx error log: no alert, emerg, crit, crash or leak');
    $self->_cleanup;
}

sub _check {
    my ($self, $name, $failures_only) = @_;

    $self->stop;

    $self->_check_error_log($name, $failures_only);
    $self->_check_valgrind($failures_only) if $VALGRIND && $self->{ran};
    $self->_check_asan($failures_only) if asan();    # ASan block
}

sub _check_error_log {
    my ($self, $name, $failures_only) = @_;

    my @p = $self->_log_problems;
    return unless @p || (-e "$self->{dir}/error.log" && !$failures_only);

    Test::More::ok(!@p, $name) and return;
    Test::More::diag("  $_") for @p;
    Test::More::diag("error log tail ($self->{dir}/error.log):\n"
                     . _tail($self->error_log));
}

# The errors of valgrind's logs, as [ log file, error text ] (the text
# without the "==pid== " prefixes): each error is one block of lines
# between "==pid== " lines that are otherwise empty.
my $VG_ERROR = join '|', map { "(?:$_)" } (
    'Invalid (?:read|write) of size',
    'Invalid (?:free|delete|delete\[\]|realloc)\(\)',
    'Mismatched free\(\)',
    'Conditional jump or move depends on uninitialised',
    'Use of uninitialised value',
    'Syscall param .* (?:uninitialised|unaddressable)',
    'Source and destination overlap',
    "Argument '\\w+' of function \\w+ has a fishy",
    'Jump to the invalid address',
    'Process terminating with default action',
    '[\d,]+ (?:\([^)]*\) )?bytes in [\d,]+ blocks are definitely lost',
    'Invalid \w+ ',
);
$VG_ERROR = qr/^(?:$VG_ERROR)/;

my $VG_OURS = qr/ngx_http_corelog|libjansson|libpq/;

sub _valgrind_errors {
    my $self = shift;
    my @errors;

    for my $file (sort glob "$self->{dir}/valgrind.*.log") {
        my $text = _slurp($file) // next;
        my @block;
        my $flush = sub {
            push @errors, [ $file, join "\n", @block ]
                if @block && $block[0] =~ $VG_ERROR;
            @block = ();
        };
        for my $line (split /\n/, $text) {
            if ($line =~ /^==\d+==(?: (.*))?$/) {
                my $l = $1 // '';
                if ($l =~ /^\s*$/) { $flush->() } else { push @block, $l }
            } else {
                $flush->();    # --pid-- messages, ...
            }
        }
        $flush->();
    }

    return @errors;
}

# One test, "valgrind: no memory errors": none of the errors that valgrind
# logged (and t/valgrind.supp does not suppress) may involve the module or
# the libraries it drives (jansson, libpq).
sub _check_valgrind {
    my ($self, $failures_only) = @_;
    my $name = 'valgrind: no memory errors';

    my @logs = glob "$self->{dir}/valgrind.*.log";
    if (!@logs) {
        Test::More::ok(0, $name);
        Test::More::diag("no valgrind logs in $self->{dir}: did nginx run "
                         . "under valgrind?");
        $self->{keep} = 1;
        return;
    }

    # The same error in every worker (or several times) is shown once.
    my (%seen, @ours, @other);
    for my $e ($self->_valgrind_errors) {
        my ($file, $text) = @$e;
        (my $key = $text) =~ s/0x[0-9A-Fa-f]+/0x/g;
        $key =~ s/^\d[\d,]* (?:\(\d[\d,]* direct, \d[\d,]* indirect\) )?bytes in [\d,]+ blocks/N bytes/;
        $key =~ s/loss record [\d,]+ of [\d,]+/loss record/;
        next if $seen{$key}++;
        push @{ $text =~ $VG_OURS ? \@ours : \@other },
            [ basename($file), $text ];
    }

    if (@other) {
        Test::More::diag(scalar(@other) . " unsuppressed valgrind error(s) "
            . "outside the module (not a failure; a suppression for "
            . "t/valgrind.supp?):");
        Test::More::diag(_vg_excerpt(@$_)) for @other[0 .. _min($#other, 4)];
    }

    return if !@ours && $failures_only;
    Test::More::ok(!@ours, $name) and return;

    $self->{keep} = 1;
    Test::More::diag(scalar(@ours) . " valgrind error(s) in the module, "
                     . "libjansson or libpq (logs kept in $self->{dir}):");
    Test::More::diag(_vg_excerpt(@$_)) for @ours;
}

sub _min { $_[0] < $_[1] ? $_[0] : $_[1] }

sub _vg_excerpt {
    my ($file, $text) = @_;
    my @l = split /\n/, $text;
    splice @l, 60, @l - 60, '...' if @l > 61;
    return "$file:\n" . join '', map { "    $_\n" } @l;
}

###########################################################################
# ASan block (`make asan`, scripts/asan.sh) -- begin
#
# TEST_CORELOG_ASAN=1, with TEST_CORELOG_NGINX and TEST_CORELOG_MODULE
# naming nginx and the module built by gcc with -fsanitize=address,undefined
# (.build/asan/): every nginx that the harness starts (run(), and `nginx -t`
# in nginx_test_conf()) gets ASAN_OPTIONS / UBSAN_OPTIONS (read when the
# process starts: the workers are forks of the master and keep them although
# nginx clears their environment).  done() then checks, as one more test,
# "asan: no sanitizer reports": any AddressSanitizer or UBSan ("runtime
# error:") report fails it, is shown, and keeps the directory.
#
# Where the reports are: ASan's in <dir>/asan.<pid> (log_path).  UBSan's go
# to stderr whatever its log_path says (gcc's libubsan is a runtime of its
# own beside libasan, and its log_path only reaches libasan's copy of the
# report file, through the shared __sanitizer_set_report_path symbol: so
# UBSAN_OPTIONS must name the same log_path as ASAN_OPTIONS, or ASan's
# reports go to stderr too).  nginx's stderr is error.log once the master
# has read its configuration (and in the workers), the output of `nginx -t`
# (which nginx_test_conf returns: a report is in the test's $out as well)
# and, before that, the output of the start; the check reads all three.
# UBSan goes on after a report (halt_on_error=0; the code is built with
# recovery), so one run shows them all; ASan stops the process at its first.
#
# Leaks: detect_leaks=0.  nginx itself leaves hundreds of allocations
# unreachable at exit (every `nginx -t`), and LeakSanitizer's exit code (23)
# would fail the tests that check nginx -t's; the leak check is valgrind's
# (`make valgrind`: definite leaks in the module, libpq, libjansson).
# TEST_CORELOG_ASAN_OPTIONS / TEST_CORELOG_UBSAN_OPTIONS add options
# (colon-separated, after the harness's).  t/asan.supp and t/ubsan.supp
# hold the suppressions (nginx's own reports).  The harness's own waits are
# doubled (TEST_CORELOG_TIMEOUT_FACTOR defaults to 2 under ASan).

our $ASAN = $ENV{TEST_CORELOG_ASAN} ? 1 : 0;
our $ASAN_SUPP  = "$ROOT/t/asan.supp";
our $UBSAN_SUPP = "$ROOT/t/ubsan.supp";

$TIMEOUT_FACTOR = 2
    if $ASAN && !$VALGRIND && !$ENV{TEST_CORELOG_TIMEOUT_FACTOR};

sub asan { $ASAN }

# The environment of an nginx under the sanitizers ((name => value, ...),
# empty unless TEST_CORELOG_ASAN).
sub _asan_env {
    my $self = shift;
    return () unless $ASAN;

    my $log = "log_path=$self->{dir}/asan";
    # frames name nginx's sources and the module's as src/...
    my $strip = "strip_path_prefix=$ROOT/";

    my @asan = ($log, $strip, 'detect_leaks=0', 'abort_on_error=0');
    my @ubsan = ($log, $strip, 'print_stacktrace=1', 'halt_on_error=0',
                 'abort_on_error=0');
    push @asan, "suppressions=$ASAN_SUPP" if -f $ASAN_SUPP;
    push @ubsan, "suppressions=$UBSAN_SUPP" if -f $UBSAN_SUPP;

    push @asan, $ENV{TEST_CORELOG_ASAN_OPTIONS}
        if $ENV{TEST_CORELOG_ASAN_OPTIONS};
    push @ubsan, $ENV{TEST_CORELOG_UBSAN_OPTIONS}
        if $ENV{TEST_CORELOG_UBSAN_OPTIONS};

    return (ASAN_OPTIONS  => join(':', @asan),
            UBSAN_OPTIONS => join(':', @ubsan));
}

# (exit code, output) of an nginx command, returned as they are; the
# output is kept for the check (UBSan writes to stderr).
sub _asan_output {
    my ($self, $rc, $out) = @_;
    push @{$self->{asan_output}}, $out
        if $ASAN && defined $out && $out =~ /runtime error:|Sanitizer/;
    return ($rc, $out);
}

my $ASAN_REPORT =
    qr/ERROR: (?:Address|Leak|UndefinedBehavior)Sanitizer|runtime error:/;
my $ASAN_NOT_REPORT = qr{^\s*$|^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[|^nginx: };

# The reports, as [ where, text ].  In <dir>/asan.* a report goes on to the
# next one (ASan's "=====" rules dropped); in error.log and the outputs up
# to an empty line, an nginx log line or an "nginx: " line.
sub _asan_reports {
    my $self = shift;
    my (@reports, @other);

    my @texts = map { [ basename($_), _slurp($_) // '', 1 ] }
                sort glob "$self->{dir}/asan.*";
    push @texts, [ 'error.log', $self->error_log, 0 ];
    push @texts, map { [ 'nginx output', $_, 0 ] }
                 @{$self->{asan_output} // []};

    for my $t (@texts) {
        my ($where, $text, $file) = @$t;
        my $cur;
        for my $line (split /\n/, $text) {
            if ($line =~ $ASAN_REPORT) {
                push @reports, $cur = [ $where, $line ];
            } elsif ($cur && ($file ? $line !~ /^=+$/
                                    : $line !~ $ASAN_NOT_REPORT)) {
                $cur->[1] .= "\n$line";
            } elsif ($file && $line =~ /\S/ && $line !~ /^=+$/) {
                push @other, [ $where, $line ];
            } else {
                undef $cur unless $file;
            }
        }
    }

    return (\@reports, \@other);
}

# One test, "asan: no sanitizer reports" (see above).
sub _check_asan {
    my ($self, $failures_only) = @_;
    my $name = 'asan: no sanitizer reports';

    return unless $self->{ran} || $self->{tested_conf};

    my ($reports, $other) = $self->_asan_reports;

    # Other lines in the report files (warnings) are shown, not a failure.
    if (@$other) {
        Test::More::diag("sanitizer output that is not a report:");
        Test::More::diag("  $_->[0]: $_->[1]")
            for @$other[0 .. _min($#$other, 9)];
    }

    # The same report in every worker (or several times) is shown once.
    my (%seen, @unique);
    for my $r (@$reports) {
        (my $key = $r->[1]) =~ s/0x[0-9A-Fa-f]+/0x/g;
        $key =~ s/==\d+==/==/g;
        $key =~ s/\b(?:thread T|pid |tid: )\d+/T/g;
        push @unique, $r unless $seen{$key}++;
    }

    return if !@unique && $failures_only;
    Test::More::ok(!@unique, $name) and return;

    $self->{keep} = 1;
    Test::More::diag(scalar(@$reports) . " sanitizer report(s), "
                     . scalar(@unique) . " different (kept in "
                     . "$self->{dir}):");
    Test::More::diag(_vg_excerpt($_->[0], _asan_symbolize($_->[1])))
        for @unique[0 .. _min($#unique, 9)];
}

# gcc's libubsan makes its list of loaded objects at its first report (or
# suppression) and does not see a module dlopen()ed later (libasan's dlopen
# interceptor refreshes libasan's list only): the module's frames then come
# as "(.build/asan/ngx_http_corelog_module.so+0x89e9d)".  addr2line names
# them.
sub _asan_symbolize {
    my $text = shift;
    $text =~ s{^(\s*\#\d+\ 0x[0-9a-fA-F]+)\s+\((\S+?)\+(0x[0-9a-fA-F]+)\)$}
              { my $in = _addr2line($2, $3);
                defined $in ? "$1 in $in" : "$1  ($2+$3)" }gme;
    return $text;
}

sub _addr2line {
    my ($file, $offset) = @_;
    $file = "$ROOT/$file" unless $file =~ m{^/};
    return undef unless -f $file;

    open my $fh, '-|', 'addr2line', '-f', '-i', '-e', $file, $offset
        or return undef;
    my @l = <$fh>;
    close $fh;
    chomp @l;
    return undef if !@l || $l[0] eq '??';

    # function, file:line pairs, the innermost (inlined) first
    my @frames;
    while (my ($func, $where) = splice @l, 0, 2) {
        $where =~ s{^\Q$ROOT\E/}{};
        push @frames, "$func $where";
    }
    return join ' (inlined into) ', @frames;
}

# ASan block -- end
###########################################################################
# the --with-debug build

# Corelog::Test::use_debug_build() before new(): so that `error_log ...
# debug` shows the module's ngx_log_debug lines, this test file runs the
# stock nginx and objs/ when that nginx is --with-debug (Debian's is), else
# those of `make debug-build` (scripts/nginx-build.sh: .build/debug/, or
# TEST_CORELOG_DEBUG_BUILD, which also forces them).  When TEST_CORELOG_NGINX or
# TEST_CORELOG_MODULE names a build (make asan, make mutate: built with
# --with-debug too), that one stays.  Returns '' or, when there is no such
# build, the reason to skip.
sub use_debug_build {
    unless (defined $ENV{TEST_CORELOG_NGINX}
            || defined $ENV{TEST_CORELOG_MODULE}
            || (!defined $ENV{TEST_CORELOG_DEBUG_BUILD}
                && _with_debug($NGINX)))
    {
        my $dir = $ENV{TEST_CORELOG_DEBUG_BUILD} // "$ROOT/.build/debug";
        my $so = "$dir/ngx_http_corelog_module.so";
        return "no debug build in $dir (make debug-build)"
            unless -x "$dir/nginx" && -f $so;
        ($NGINX, $MODULE) = ("$dir/nginx", $so);

        my @newer = grep { (stat $_)[9] > (stat $so)[9] }
                    glob "$ROOT/src/*.[ch] $ROOT/*.c $ROOT/config";
        Test::More::diag("$so is older than "
                         . join(' ', map { s{^\Q$ROOT\E/}{}r } @newer)
                         . ': make debug-build') if @newer;
    }

    return '' if _with_debug($NGINX);
    return "$NGINX is not built --with-debug";
}

# nginx -V says --with-debug (Debian's nginx is built so)
sub _with_debug {
    my ($nginx) = @_;

    open my $fh, '-|', 'sh', '-c', 'exec "$0" -V 2>&1', $nginx or return 0;
    my $v = do { local $/; <$fh> } // '';
    close $fh;
    return $v =~ /^configure arguments:.* --with-debug\b/m;
}

###########################################################################

sub _cleanup {
    my $self = shift;
    return if $self->{cleaned}++;

    $self->stop;
    eval { $self->pg_stop; 1 } or Test::More::diag("pg_stop: $@");

    unlink @{$self->{ports}};

    if ($ENV{TEST_CORELOG_KEEP} || $self->{keep}) {
        Test::More::diag("kept $self->{dir}");
    } else {
        remove_tree($self->{dir});
        remove_tree($self->{pg_sockdir}) if $self->{pg_sockdir};
    }

    delete $LIVE{refaddr $self};
}

# Forgotten $t->done, a test that died, Ctrl-C: check and clean up anyway.
# Only a failed check is reported then (as a failing test): a passing one
# would break the plan of a test that ended with done_testing.
sub _finish {
    my $self = shift;
    return if $self->{cleaned} || $self->{owner_pid} != $$;
    $self->_check('nginx error log (checked at exit): no alert, emerg, '
                  . 'crit, crash or leak', 1)
        unless $self->{done}++;
    $self->_cleanup;
}

sub DESTROY {
    local ($@, $!, $?);
    eval { $_[0]->_finish };
}

END {
    local $?;
    for my $t (grep { defined } values %LIVE) {
        eval { $t->_finish; 1 } or print STDERR "# cleanup: $@";
    }
}

###########################################################################
# small helpers

sub _run {
    my ($self, $cmd) = @_;

    my $out = "$self->{dir}/.cmd-$$.out";
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings q(exec); exec { $cmd->[0] } @$cmd; }
        print STDERR "exec $cmd->[0]: $!\n";
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    my $text = _slurp($out) // '';
    unlink $out;
    return ($rc, $text);
}

sub _slurp {
    my $file = shift;
    open my $fh, '<:raw', $file or return undef;
    local $/;
    my $text = <$fh>;
    return $text // '';
}

sub _write {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

sub _append {
    my ($file, $text) = @_;
    open my $fh, '>>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

sub _tail {
    my ($text, $n) = (@_, 30);
    my @l = split /\n/, $text // '';
    splice @l, 0, @l - $n if @l > $n;
    return join '', map { "  $_\n" } @l;
}

1;
