#!/usr/bin/perl

# scripts/deps.sh (make deps) waits for apt's lock instead of failing at
# once: fresh cloud machines often run unattended-upgrades at boot, which
# holds it.  apt-get and dpkg-query are stand-ins here (first in PATH): the
# lock is apt's, on the host's package database, which a test must not
# hold.  The stand-in apt-get answers the first two `update`s exactly as
# apt does when another apt-get holds the lock (exit 100), then succeeds.
# Last, a freshly installed prometheus package: its daemon is stopped and
# disabled.

use strict;
use warnings;

use Test::More;
use FindBin;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);

plan skip_all => 'deps.sh runs apt-get through sudo when not root'
    if $> != 0;

my $root = "$FindBin::Bin/..";
my $dir = tempdir('deps-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub script {
    my ($name, $body) = @_;
    open my $fh, '>', "$dir/$name" or die "$name: $!\n";
    print $fh "#!/bin/sh\n$body";
    close $fh;
    chmod 0755, "$dir/$name";
}

script('dpkg-query', "echo not-installed\n");

script('apt-get', <<"EOF");
echo "\$*" >>"$dir/calls"
case " \$* " in
*" update "*)
    n=\$(cat "$dir/held" 2>/dev/null || echo 0)
    if [ "\$n" -lt 2 ]; then
        echo \$((n + 1)) >"$dir/held"
        echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
        echo "E: Unable to lock directory /var/lib/apt/lists/" >&2
        exit 100
    fi ;;
esac
exit 0
EOF

local $ENV{PATH} = "$dir:$ENV{PATH}";

my $start = time;
my $out = `"$root/scripts/deps.sh" --only corelog-test-package 2>&1`;
my $rc = $? >> 8;
my $took = time - $start;

is($rc, 0, 'the lock held for two tries: exit 0') or diag($out);
like($out, qr/^deps: another apt-get or dpkg holds apt's lock .*waiting/m,
     'says it waits, and why');
cmp_ok($took, '>=', 3.5, sprintf('waited (%.1f s)', $took));

open my $fh, '<', "$dir/calls" or die "calls: $!\n";
my @calls = <$fh>;
close $fh;
is(scalar(grep { / update / } @calls), 3, 'update tried three times');
my ($install) = grep { / install / } @calls;
ok($install && $install =~ /corelog-test-package/,
   'then install, of the missing package');
like($install // '', qr/-o DPkg::Lock::Timeout=600 /,
     "install waits for dpkg's lock too");

# Another failure is not waited for.
unlink "$dir/calls";
script('apt-get', <<'EOF');
echo "E: The repository 'http://example.invalid bookworm Release' does not have a Release file." >&2
exit 100
EOF
$start = time;
$out = `"$root/scripts/deps.sh" --only corelog-test-package 2>&1`;
$rc = $? >> 8;
is($rc, 100, 'another apt error: its exit status');
cmp_ok(time - $start, '<', 2, 'at once');
unlike($out, qr/waiting/, 'no wait');

# A fresh prometheus package: the daemon its postinst may start (port 9090)
# is stopped, and disabled at boot.  service and update-rc.d are stand-ins
# too, which record what they are asked.
script('apt-get', "exit 0\n");
script($_, 'echo "${0##*/} $*" >>"' . "$dir/services\"\n")
    for qw(service update-rc.d);
$out = `"$root/scripts/deps.sh" --only prometheus 2>&1`;
is($? >> 8, 0, 'prometheus installed: exit 0') or diag($out);
my $services = open($fh, '<', "$dir/services") ? do { local $/; <$fh> }
                                                : '';
is($services, "service prometheus stop\nupdate-rc.d prometheus disable\n",
   'the packaged Prometheus server is stopped and disabled');

done_testing;
