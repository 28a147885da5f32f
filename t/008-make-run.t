#!/usr/bin/perl

# make run (scripts/run.sh) from a fresh copy of the checkout: it creates
# its PostgreSQL cluster, applies the schema, seeds the demo, starts nginx
# with the shipped configuration and prints a token and the curl lines;
# the channel line's request is stored; SIGINT stops nginx and PostgreSQL.
# As root, the checkout is in a directory only root can enter (mode 0700,
# a home directory's usual mode): PostgreSQL runs as "postgres" and the
# nginx workers as "nobody", so the run's data goes elsewhere
# (/var/tmp/corelog-run-*, .run a link to it).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use DBI;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Corelog::Test;

plan skip_all => 'not under valgrind or ASan (run.sh starts nginx itself)'
    if $Corelog::Test::VALGRIND || $Corelog::Test::ASAN;

my $t = Corelog::Test->new(pg => 0);
my $root = $Corelog::Test::ROOT;
my $private = $t->dir . '/private';
my $co = "$private/corelog";

mkdir $private, 0700 or die "mkdir $private: $!\n";
chmod 0700, $private;
mkdir $co or die "mkdir $co: $!\n";
system('cp', '-r', "$root/scripts", "$root/conf", "$root/sql", "$co/") == 0
    or die "cp: $?\n";
mkdir "$co/objs" or die "mkdir: $!\n";
system('cp', $Corelog::Test::MODULE, "$co/objs/ngx_http_corelog_module.so")
    == 0 or die "cp: $?\n";

my $out = $t->dir . '/run.out';
my $pid = fork // die "fork: $!\n";
if ($pid == 0) {
    POSIX::setpgid(0, 0);
    chdir $co or POSIX::_exit(126);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', $out or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    $ENV{PORT} = $t->port;
    $ENV{PGPORT} = $t->port2;
    $ENV{NGINX} = $Corelog::Test::NGINX;
    { no warnings 'exec'; exec 'scripts/run.sh'; }
    POSIX::_exit(127);
}

sub output { open my $fh, '<', $out or return ''; local $/; <$fh> }

my $deadline = time + 120;
until (output() =~ /corelog is running/) {
    last if time > $deadline || waitpid($pid, POSIX::WNOHANG()) == $pid;
    sleep 0.2;
}
my $text = output();
like($text, qr/^corelog is running; Ctrl-C stops nginx and PostgreSQL\.$/m,
     'make run: running') or diag($text);

my ($token) = $text =~ /^  demo token  (\S+)$/m;
my ($channel) = $text =~ /"channel_id":"([0-9a-f-]{36})"/;
ok($token && $channel, 'it prints a token and the channel line');

if ($> == 0) {
    like($text, qr/is not reachable by the postgres user .* the run's data is in \/var\/tmp\/corelog-run-\d+ \(\.run links to it\)/,
         'as root from a 0700 directory: says where the data goes');
    like(readlink("$co/.run") // '', qr{^/var/tmp/corelog-run-\d+$},
         '.run links there');
}

my $label = 'from t/008 ' . time;
my $r = $t->http(POST => '/api/v1/log/create',
    headers => { Authorization => 'Bearer ' . ($token // ''),
                 'Content-Type' => 'application/json' },
    body => encode_json({ channel_id => $channel, label => $label }));
is($r->{status}, 202, 'the channel line: 202');

my $dbh = DBI->connect('dbi:Pg:host=127.0.0.1;port=' . $t->port2
                       . ';dbname=corelog', 'postgres', '',
                       { RaiseError => 0, PrintError => 0 });
is($dbh && $dbh->selectrow_array(
       'SELECT count(*) FROM corelog.channel_logs WHERE label = $1',
       undef, $label), 1, 'stored in the run\'s database');
$dbh->disconnect if $dbh;

kill 'INT', $pid;
my $status;
$deadline = time + 60;
until (defined $status) {
    $status = $? if waitpid($pid, POSIX::WNOHANG()) == $pid;
    last if time > $deadline;
    sleep 0.1;
}
ok(defined $status, 'SIGINT: make run exits');
$text = output();
like($text, qr/^run: stopping PostgreSQL$/m, 'stopping PostgreSQL');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $_,
                          Timeout => 1),
   "nothing listens on $_ any more") for $t->port, $t->port2;

# make distclean's part
if (defined $status) {
    my $away = readlink "$co/.run";
    system('rm', '-rf', $away) if $away && $away =~ m{^/var/tmp/corelog-run-};
} else {
    kill 'KILL', -$pid;
}

done_testing;
