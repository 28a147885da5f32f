#!/usr/bin/perl

# scripts/build.sh (make build) installs nothing: without an nginx source
# tree, a compiler or a library's headers it says what is missing and that
# make deps installs it, exits 1, and leaves the build directory alone.
# A compiler that cannot find some headers stands in for a machine without
# the packages.  And it builds whatever the checkout's path.

use strict;
use warnings;

use Test::More;
use FindBin;
use File::Temp qw(tempdir);

my $root = "$FindBin::Bin/..";
my $dir = tempdir('build-needs-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $objs = "$dir/objs";

sub build {
    my (%env) = @_;
    local $ENV{CORELOG_OBJS} = $objs;
    local @ENV{keys %env} = values %env;
    my $out = `"$root/scripts/build.sh" 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = build(NGINX_SRC => "$dir/none");
is($rc, 1, 'no nginx source tree at NGINX_SRC: exit 1');
like($out, qr{NGINX_SRC=\Q$dir\E/none is not an nginx source tree},
     'and says so');

open my $fh, '>', "$dir/cc" or die "$dir/cc: $!\n";
print $fh <<'EOF';
#!/bin/sh
# cc without the headers of libpq and jansson
in=$(cat)
case $in in *libpq-fe.h*|*jansson.h*) exit 1 ;; esac
printf '%s\n' "$in" | exec cc "$@"
EOF
close $fh;
chmod 0755, "$dir/cc";

($rc, $out) = build(CC => "$dir/cc");
is($rc, 1, 'headers missing: exit 1');
like($out, qr/^build: missing .*libpq-fe\.h \(package libpq-dev\)$/m,
     'names libpq-fe.h and libpq-dev');
like($out, qr/^build: missing .*jansson\.h \(package libjansson-dev\)$/m,
     'names jansson.h and libjansson-dev');
unlike($out, qr/openssl/, 'not what is there');
like($out, qr/^build: `make deps` installs what is missing/m,
     'points to make deps');

($rc, $out) = build(CC => "$dir/no-such-cc");
is($rc, 1, 'no compiler: exit 1');
like($out, qr/^build: missing the C compiler .* \(package gcc\)$/m,
     'names gcc');

ok(!-e $objs, 'the build directory untouched');

# nginx's auto/make rewrites ".S" anywhere in a path (an assembler
# source's suffix): a checkout under /home/j.Smith/ and a build directory
# named like mktemp's /tmp/tmp.S.../ build all the same.
SKIP: {
    skip 'no nginx source tree in /usr/share/nginx/src (make deps)', 3
        unless -x '/usr/share/nginx/src/configure';

    my $module = "$dir/j.Smith/corelog";
    system('mkdir', '-p', $module) == 0 or die "mkdir: $?\n";
    system('cp', '-r', "$root/config", "$root/ngx_http_corelog_module.c",
           "$root/src", "$module/") == 0 or die "cp: $?\n";

    ($rc, $out) = build(CORELOG_MODULE_DIR => $module,
                        CORELOG_OBJS => "$dir/tmp.Sx1/objs");
    is($rc, 0, 'the module in j.Smith/, built in tmp.Sx1/: exit 0')
        or diag($out);
    ok(-s "$dir/tmp.Sx1/objs/ngx_http_corelog_module.so", 'and the .so');
    unlike($out, qr/No rule to make target/, 'no make error');
}

# make test-matrix without nginx tarballs (a user's fresh machine): where
# to put one, not an obscure failure.
{
    mkdir "$dir/no-tarballs" or die "mkdir: $!\n";
    local $ENV{NGINX_TARBALLS} = "$dir/no-tarballs";
    my $out = `"$root/scripts/matrix.sh" 1.30.4 2>&1`;
    is($? >> 8, 1, 'test-nginx NGINX_VERSION=1.30.4 without its tarball: exit 1');
    like($out, qr{^matrix: no \Q$dir\E/no-tarballs/nginx-1\.30\.4\.tar\.gz: put nginx\.org's tarball \(https://nginx\.org/download/nginx-1\.30\.4\.tar\.gz\) there}m,
         'says where to put which tarball');
    like($out, qr/^nginx 1\.30\.4 +NO SOURCE /m, 'and its matrix line');

    $out = `"$root/scripts/matrix.sh" --tarballs 2>&1`;
    is($? >> 8, 0, 'the tarballs of an empty directory: exit 0');
    like($out, qr/^matrix: no nginx-X\.Y\.Z\.tar\.gz in .*put nginx\.org's tarball/m,
         'says so');
}

done_testing;
