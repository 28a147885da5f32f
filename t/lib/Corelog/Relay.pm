package Corelog::Relay;

# A TCP relay between nginx and the test's PostgreSQL that can misbehave
# on demand, to test what the module does when the server's answers are
# odd, missing or late.  Pure Perl (core modules only).
#
#   my $relay = Corelog::Relay->new($t);      # listens on 127.0.0.1:<port>
#                                             # (mode => 'stall': start so)
#   my $conninfo = $relay->conninfo;          # for corelog_postgres
#   $relay->mode('intrans');                  # returns once it applies
#   $relay->accepted;                         # connections accepted so far
#   $relay->stop;                             # also on DESTROY
#
# The relay is a forked child with one select() loop.  Each accepted
# client gets its own TCP connection to PostgreSQL (the test cluster
# listens on 127.0.0.1:$t->pg_port).  Client->server bytes are forwarded
# verbatim.  Server->client bytes are cut into protocol messages (a type
# byte and an int32 length that counts itself), which the mode acts on:
#
#   pass     forward every message verbatim
#   intrans  rewrite the status byte of every ReadyForQuery ('Z') from 'I'
#            (idle) to 'T' (in a transaction block): the client believes a
#            transaction was left open
#   refuse   close every connection at once, and close each new one as soon
#            as it is accepted (a server that is down but answers fast)
#   stall    hold the server's bytes (read, not forwarded) until the mode
#            changes again; then they go on in order
#   deaf     stop reading the clients' bytes: they fill the socket buffers
#            (64 KB to receive, segments of 1400 bytes), so a large statement
#            cannot be sent at once and nginx must wait for its socket to
#            be writable again; then they go on in order
#
# The message parsing assumes the server speaks first with a typed
# message: the conninfo must have sslmode=disable and gssencmode=disable
# (conninfo() has both), so that no one-byte SSL/GSS answer comes first.
#
# The test sets the mode through a control file in the test directory
# ("<seq> <mode>", replaced atomically); the relay reads it on every turn
# of its loop (20 ms apart at most) and acknowledges in a state file
# ("<seq> <accepted>"), which mode() waits for.  So a mode set by the test
# applies to every byte the relay forwards afterwards, and to a message
# whose bytes are already buffered in the relay too.
#
# Writes are blocking: fine for the small messages of the tests.

use strict;
use warnings;

use Errno qw(EINTR);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket ();
use Time::HiRes qw(sleep time);

my %MODES = map { $_ => 1 } qw(pass intrans refuse stall deaf);

sub new {
    my ($class, $t, %opt) = @_;

    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => 0, Proto => 'tcp',
                                       Listen => 128, ReuseAddr => 1)
        or die "relay: listen: $@\n";

    # accepted sockets inherit both: "deaf" fills the buffers soon (with
    # loopback's 64 KB segments nginx's send buffer would take megabytes)
    setsockopt($listen, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 65536)
        or die "relay: SO_RCVBUF: $!\n";
    setsockopt($listen, Socket::IPPROTO_TCP(), Socket::TCP_MAXSEG(), 1400)
        or die "relay: TCP_MAXSEG: $!\n";

    my $self = bless {
        port      => $listen->sockport,
        pg_port   => $t->pg_port,
        ctl       => $t->dir . '/relay.ctl',
        state     => $t->dir . '/relay.state',
        seq       => 0,
        owner_pid => $$,
    }, $class;

    _write_atomic($self->{ctl}, "0 " . ($opt{mode} // 'pass') . "\n");
    unlink $self->{state};

    my $pid = fork // die "relay: fork: $!\n";

    if ($pid == 0) {
        # no END blocks, no signal handlers of the test in the child
        $SIG{$_} = 'DEFAULT' for qw(INT TERM);
        $SIG{PIPE} = 'IGNORE';
        eval { $self->_loop($listen); 1 }
            or print STDERR "# relay: $@";
        POSIX::_exit(0);
    }

    close $listen;
    $self->{pid} = $pid;

    # wait for the first acknowledgement: the loop is running
    $self->_wait_seq(0);

    return $self;
}

sub port { $_[0]{port} }

# A conninfo for corelog_postgres that goes through the relay.
sub conninfo {
    my $self = shift;
    return "host=127.0.0.1 port=$self->{port} dbname=corelog user=postgres "
         . "sslmode=disable gssencmode=disable";
}

# Sets the mode and returns once the relay has applied it.
sub mode {
    my ($self, $mode) = @_;
    die "relay: unknown mode \"$mode\"\n" unless $MODES{$mode};
    my $seq = ++$self->{seq};
    _write_atomic($self->{ctl}, "$seq $mode\n");
    $self->_wait_seq($seq);
    return $self;
}

# How many client connections the relay has accepted (refused ones too).
sub accepted {
    my $self = shift;
    my ($seq, $n) = split ' ', _slurp($self->{state}) // '';
    return $n // 0;
}

sub stop {
    my $self = shift;
    my $pid = delete $self->{pid} or return;
    return if $self->{owner_pid} != $$;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub DESTROY {
    local ($@, $!, $?);
    $_[0]->stop;
}

sub _wait_seq {
    my ($self, $seq) = @_;
    my $deadline = time + 10;
    while (time < $deadline) {
        my ($got) = split ' ', _slurp($self->{state}) // '';
        return if defined $got && $got >= $seq;
        die "relay: the relay process has exited\n"
            if waitpid($self->{pid}, POSIX::WNOHANG()) == $self->{pid};
        sleep 0.01;
    }
    die "relay: mode change $seq not acknowledged in 10 s\n";
}

###########################################################################
# the child

sub _loop {
    my ($self, $listen) = @_;

    my $ppid = getppid;
    my $sel = IO::Select->new($listen);
    my %pairs;      # "$pair" => pair { client, server, buf (server bytes) }
    my %by_fd;      # fileno of either socket => its pair
    my $mode = '';
    my $seq = -1;
    my $accepted = 0;
    my $state = '';

    my $drop = sub {
        my $p = shift;
        delete $pairs{$p};
        for my $s ($p->{client}, $p->{server}) {
            delete $by_fd{fileno $s};
            $sel->remove($s);
            close $s;
        }
    };

    while (1) {
        POSIX::_exit(0) if getppid != $ppid;    # the test has gone

        # the mode: refuse drops every connection at once
        my ($s, $m) = split ' ', _slurp($self->{ctl}) // '';
        if (defined $m && $MODES{$m} && $s != $seq) {
            ($seq, $mode) = ($s, $m);
            if ($mode eq 'refuse') {
                $drop->($_) for values %pairs;
            }
            # deaf: the clients' sockets are not read (nor selected)
            for my $p (values %pairs) {
                if ($mode eq 'deaf') {
                    $sel->remove($p->{client});
                } elsif (!$sel->exists($p->{client})) {
                    $sel->add($p->{client});
                }
            }
        }

        # server bytes held (stall) or buffered go on in the new mode
        for my $p (values %pairs) {
            _forward($p, $mode) or $drop->($p);
        }

        # then the acknowledgement
        if ($state ne "$seq $accepted\n") {
            $state = "$seq $accepted\n";
            _write_atomic($self->{state}, $state);
        }

        for my $fh ($sel->can_read(0.02)) {
            next unless defined fileno $fh;    # dropped meanwhile

            if ($fh == $listen) {
                my $client = $listen->accept or next;
                $accepted++;
                if ($mode eq 'refuse') {
                    close $client;
                    next;
                }
                my $server = IO::Socket::INET->new(
                    PeerAddr => '127.0.0.1', PeerPort => $self->{pg_port},
                    Proto => 'tcp');
                if (!$server) {
                    close $client;
                    next;
                }
                my $p = { client => $client, server => $server, buf => '' };
                $pairs{$p} = $p;
                $by_fd{fileno $client} = $by_fd{fileno $server} = $p;
                $sel->add($server);
                $sel->add($client) unless $mode eq 'deaf';
                next;
            }

            my $p = $by_fd{fileno $fh} or next;
            my $n = sysread $fh, my $data, 65536;
            next if !defined $n && $! == EINTR;

            if (!$n) {
                # EOF or error on either side: both go, and any server
                # bytes still held with them
                $drop->($p);

            } elsif ($fh == $p->{client}) {
                _write_all($p->{server}, $data) or $drop->($p);

            } else {
                $p->{buf} .= $data;
                _forward($p, $mode) or $drop->($p);
            }
        }
    }
}

# Forwards the complete server messages of $p->{buf} unless the mode holds
# them; false if the client is gone.
sub _forward {
    my ($p, $mode) = @_;

    return 1 if $mode eq 'stall' || $mode eq 'refuse';

    my $out = '';

    while (length $p->{buf} >= 5) {
        my ($type, $len) = unpack 'a N', $p->{buf};
        last if length $p->{buf} < 1 + $len;

        my $msg = substr $p->{buf}, 0, 1 + $len, '';

        if ($mode eq 'intrans' && $type eq 'Z' && $len == 5
            && substr($msg, 5, 1) eq 'I')
        {
            substr $msg, 5, 1, 'T';
        }

        $out .= $msg;
    }

    return 1 if $out eq '';
    return _write_all($p->{client}, $out);
}

sub _write_all {
    my ($s, $data) = @_;
    while (length $data) {
        my $n = syswrite $s, $data;
        if (!defined $n) {
            next if $! == EINTR;
            return 0;
        }
        substr $data, 0, $n, '';
    }
    return 1;
}

sub _slurp {
    my $file = shift;
    open my $fh, '<', $file or return undef;
    local $/;
    return scalar <$fh>;
}

sub _write_atomic {
    my ($file, $text) = @_;
    open my $fh, '>', "$file.$$" or die "relay: $file.$$: $!\n";
    print $fh $text;
    close $fh or die "relay: $file.$$: $!\n";
    rename "$file.$$", $file or die "relay: rename $file: $!\n";
}

1;
