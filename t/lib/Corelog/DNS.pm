package Corelog::DNS;

# A small DNS server for the tests, on 127.0.0.1 (UDP and TCP), for
# nginx's "resolver": Net::DNS::Nameserver (libnet-dns-perl) in a forked
# child.  The answers come from a file that the test rewrites with set(),
# read again for every query:
#
#   my $dns = Corelog::DNS->new(dir => $t->dir, port => $t->port2);
#   $dns->set('db.test' => ['127.0.0.2', '127.0.0.3']);   # two A records
#   $dns->set('db.test' => 'SERVFAIL');                    # or 'SILENT'
#   $dns->queries('db.test');    # how many A queries for it so far
#   $dns->stop;                  # also when the object goes away
#
# A name set to addresses gets them as A records (TTL 1 s) and an empty
# answer for AAAA and other types; 'SERVFAIL' gets SERVFAIL, 'SILENT' no
# answer at all (the resolver times out); other names NXDOMAIN.

use strict;
use warnings;

use Net::DNS::Nameserver;
use POSIX ();
use Time::HiRes qw(sleep time);

sub new {
    my ($class, %opt) = @_;

    my $self = bless {
        port    => $opt{port} // die("Corelog::DNS: no port\n"),
        answers => "$opt{dir}/dns-answers",
        log     => "$opt{dir}/dns-queries",
        ready   => "$opt{dir}/dns-ready",
        parent  => $$,
    }, $class;

    $self->set(%{$opt{names} // {}});
    unlink $self->{ready};
    _write($self->{log}, '');

    my $pid = fork // die "Corelog::DNS: fork: $!\n";

    if ($pid == 0) {
        # never the parent's END blocks (the harness's cleanup)
        eval { $self->_serve };
        print STDERR "# Corelog::DNS: $@" if $@;
        POSIX::_exit(1);
    }

    $self->{pid} = $pid;

    my $deadline = time + 10;
    until (-e $self->{ready}) {
        die "Corelog::DNS: the server did not start\n"
            if time > $deadline || waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.02;
    }

    return $self;
}

sub port { $_[0]{port} }

# set(name => [addresses] | 'SERVFAIL' | 'SILENT', ...): the answers from
# now on (names not given keep theirs)
sub set {
    my ($self, %names) = @_;
    my %all = (%{$self->{names} // {}}, %names);
    $self->{names} = \%all;
    my $text = join '', map {
        my $v = $all{$_};
        "$_ " . (ref $v ? join(' ', @$v) : $v) . "\n"
    } sort keys %all;
    _write("$self->{answers}.new", $text);
    rename "$self->{answers}.new", $self->{answers}
        or die "Corelog::DNS: rename: $!\n";
    return $self;
}

# the A queries for $name so far
sub queries {
    my ($self, $name) = @_;
    open my $fh, '<', $self->{log} or return 0;
    return scalar grep { $_ eq "A " . lc($name) . "\n" } <$fh>;
}

sub stop {
    my $self = shift;
    my $pid = delete $self->{pid} or return;
    return if $$ != $self->{parent};
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub DESTROY {
    local ($@, $!, $?);
    $_[0]->stop;
}

sub _serve {
    my $self = shift;

    $SIG{TERM} = sub { POSIX::_exit(0) };

    my $ns = Net::DNS::Nameserver->new(
        LocalAddr    => ['127.0.0.1'],
        LocalPort    => $self->{port},
        ReplyHandler => sub { $self->_reply(@_) },
        Verbose      => 0,
    ) or die "cannot listen on 127.0.0.1:$self->{port}\n";

    _write($self->{ready}, "$$\n");
    $ns->main_loop;
}

sub _reply {
    my ($self, $qname, $qclass, $qtype) = @_;

    my $name = lc $qname;
    my %answers;

    if (open my $fh, '<', $self->{answers}) {
        while (<$fh>) {
            my ($n, @v) = split;
            $answers{$n} = \@v if defined $n;
        }
    }

    if (open my $fh, '>>', $self->{log}) {
        print $fh "$qtype $name\n";
        close $fh;
    }

    my $v = $answers{$name} or return ('NXDOMAIN', [], [], [], { aa => 1 });

    return if $v->[0] eq 'SILENT';
    return ('SERVFAIL', [], [], []) if $v->[0] eq 'SERVFAIL';

    my @rr = $qtype eq 'A'
           ? map { Net::DNS::RR->new("$name 1 IN A $_") } @$v
           : ();

    return ('NOERROR', \@rr, [], [], { aa => 1 });
}

sub _write {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

1;
