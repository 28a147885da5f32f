package Corelog::Bouncer;

# A PgBouncer of the test's own (Debian's /usr/sbin/pgbouncer) between
# nginx and the test's PostgreSQL, in transaction pooling mode:
#
#   my $pgb = Corelog::Bouncer->new($t, default_pool_size => 2);
#   my $conninfo = $pgb->conninfo;        # for corelog_postgres
#   $pgb->stop;                           # SIGTERM: immediate shutdown
#   $pgb->stop('KILL');                   # or a crash
#   $pgb->start;                          # the same port and settings
#   $pgb->restart;                        # stop, then start
#   $pgb->admin('SHOW POOLS');            # the admin console, as rows
#   $pgb->log;                            # its log file
#
# Options of new (each a pgbouncer.ini setting of [pgbouncer]):
# pool_mode (transaction), default_pool_size (2), server_login_retry (1),
# ignore_startup_parameters (none), and extra => "more ini lines".
#
# Its files are in the test directory: pgbouncer-<port>.ini, userlist.txt
# (auth type trust: the user must still be listed), pgbouncer-<port>.pid
# and pgbouncer-<port>.log.  It listens on 127.0.0.1 and a free port of the harness,
# no unix socket.  As root it runs as "postgres" (PgBouncer refuses root),
# as the test cluster does.  It daemonizes (-d): it is stopped through its
# pid file, on stop, DESTROY or at exit.

use strict;
use warnings;

use POSIX ();
use Scalar::Util qw(refaddr weaken);
use Time::HiRes qw(sleep time);

use Corelog::Test;

our $BIN = $ENV{TEST_CORELOG_PGBOUNCER} // '/usr/sbin/pgbouncer';

my %LIVE;    # refaddr => weakened object, for END-time cleanup

# Whether pgbouncer can be run here (for skip_all).
sub available { -x $BIN }

sub new {
    my ($class, $t, %opt) = @_;

    my $d = $t->dir;
    my $port = $t->_free_port;

    # files of their own: another Bouncer of the test may run meanwhile
    my $self = bless {
        t         => $t,
        port      => $port,
        ini       => "$d/pgbouncer-$port.ini",
        pidfile   => "$d/pgbouncer-$port.pid",
        logfile   => "$d/pgbouncer-$port.log",
        owner_pid => $$,
    }, $class;

    my %set = (
        pool_mode                 => 'transaction',
        default_pool_size         => 2,
        server_login_retry        => 1,
        ignore_startup_parameters => '',
        %opt,
    );
    my $extra = delete $set{extra} // '';

    my $ini = join '', map { "$_ = $set{$_}\n" } sort keys %set;

    Corelog::Test::_write("$d/userlist.txt", qq{"postgres" ""\n});
    Corelog::Test::_write($self->{ini}, <<"EOF");
; written by Corelog::Bouncer
[databases]
corelog = host=127.0.0.1 port=${\ $t->pg_port} dbname=corelog

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $self->{port}
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
admin_users = postgres
logfile = $self->{logfile}
pidfile = $self->{pidfile}
max_client_conn = 200
$ini$extra
EOF

    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};

    $self->start;

    return $self;
}

sub port { $_[0]{port} }

# A conninfo for corelog_postgres that goes through PgBouncer.
sub conninfo {
    my $self = shift;
    return "host=127.0.0.1 port=$self->{port} dbname=corelog user=postgres "
         . "sslmode=disable";
}

# Starts pgbouncer (dies if it does not listen within 10 s).
sub start {
    my $self = shift;
    return $self if $self->pid;

    unlink $self->{pidfile};
    delete $self->{pid};

    my ($rc, $out) = $self->{t}->_run([Corelog::Test::_as_pg(), $BIN, '-d',
                                       $self->{ini}]);
    die "pgbouncer -d failed (exit $rc):\n$out\n" . $self->_log_tail
        if $rc;

    my $deadline = time + 10;
    until ($self->pid && Corelog::Test::_can_connect($self->{port})) {
        die "pgbouncer did not come up in 10 s\n" . $self->_log_tail
            if time > $deadline;
        sleep 0.02;
    }

    return $self;
}

# The pid of the running pgbouncer, or undef.
sub pid {
    my $self = shift;
    my $text = Corelog::Test::_slurp($self->{pidfile}) // '';
    $self->{pid} = $1 if $text =~ /^(\d+)/;
    return $self->{pid} && kill(0, $self->{pid}) ? $self->{pid} : undef;
}

# Stops pgbouncer with a signal: TERM (the default) is its immediate
# shutdown, INT its safe shutdown (waits for the transactions), KILL a
# crash.  Returns once it is gone and its port is free.
sub stop {
    my ($self, $sig) = @_;
    my $pid = $self->pid or return $self;
    return $self if $self->{owner_pid} != $$;

    kill $sig // 'TERM', $pid;

    my $deadline = time + 10;
    while (kill 0, $pid) {
        if (time > $deadline) {
            kill 'KILL', $pid;
            $deadline = time + 10;
        }
        sleep 0.02;
    }

    unlink $self->{pidfile};
    delete $self->{pid};

    return $self;
}

sub restart {
    my ($self, $sig) = @_;
    $self->stop($sig);
    $self->start;
}

sub log { Corelog::Test::_slurp($_[0]{logfile}) // '' }

sub _log_tail {
    my $log = $_[0]->log;
    return substr $log, -2000;
}

# Runs an admin console command (SHOW POOLS, SHOW SERVERS ...): the rows,
# each a hash of its columns.
sub admin {
    my ($self, $cmd) = @_;
    my $dbh = DBI->connect("dbi:Pg:dbname=pgbouncer;host=127.0.0.1;"
                           . "port=$self->{port}", 'postgres', '',
                           { AutoCommit => 1, RaiseError => 1,
                             PrintError => 0, pg_server_prepare => 0 });
    my $rows = $dbh->selectall_arrayref($cmd, { Slice => {} });
    $dbh->disconnect;
    return $rows;
}

sub DESTROY {
    local ($@, $!, $?);
    eval { $_[0]->stop };
}

END {
    local $?;
    for my $b (grep { defined } values %LIVE) {
        eval { $b->stop; 1 } or print STDERR "# pgbouncer cleanup: $@";
    }
}

1;
