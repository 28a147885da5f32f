#!/usr/bin/perl

# scripts/install.sh against Debian's nginx (/usr/sbin/nginx, 1.22.1):
#   - with the source of another version (nginx 1.30.4, a tree and a
#     tarball of ../shared/nginx) it stops before building: exit 2, one
#     line naming both versions and both paths, nothing built, nothing in
#     DESTDIR;
#   - with Debian's nginx-dev tree it builds, checks the load and installs
#     into DESTDIR: the .so, modules-enabled/50-mod-http-corelog.conf with
#     the load_module line, the conf.d example; /usr/sbin/nginx -t then
#     accepts a configuration made of those files;
#   - where nginx.conf does not include modules-enabled/ (nginx.org's
#     packages) it prints the load_module line and leaves nginx.conf alone.
# The build is kept in .build/test-install/ (about 40 s the first time).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;
use Cwd qw(abs_path);
use File::Path qw(make_path);
use File::Temp qw(tempdir);

my $ROOT = $Corelog::Test::ROOT;
my $INSTALL = "$ROOT/scripts/install.sh";
my $DEBIAN_NGINX = '/usr/sbin/nginx';
my $OTHER = '1.30.4';
my $TARBALLS = $ENV{NGINX_TARBALLS} // "$ROOT/../shared/nginx";
$TARBALLS = abs_path($TARBALLS) // $TARBALLS;    # as install.sh names it

plan skip_all => "no $DEBIAN_NGINX" unless -x $DEBIAN_NGINX;

my ($debian_version) = `$DEBIAN_NGINX -v 2>&1` =~ m{nginx/([0-9.]+)};
plan skip_all => "$DEBIAN_NGINX is nginx $OTHER: no other version to try"
    if $debian_version eq $OTHER;

my $tmp = tempdir('install-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# the harness's file helpers
*slurp = \&Corelog::Test::_slurp;
*spew = \&Corelog::Test::_write;

# install.sh ARGS with DESTDIR: (exit status, stdout, stderr)
sub install {
    my ($destdir, @args) = @_;
    local $ENV{DESTDIR} = $destdir;
    my $cmd = join ' ', map { "'$_'" } $INSTALL, @args;
    my $out = `$cmd 2>"$tmp/stderr"`;
    return ($? >> 8, $out, slurp("$tmp/stderr") // '');
}

sub files_under {
    my $dir = shift;
    return () unless -d $dir;
    return grep { length } split /\n/, `find '$dir' -mindepth 1`;
}

###########################################################################
# another version's source: exit 2 before building

SKIP: {
    skip "no nginx-$OTHER.tar.gz in $TARBALLS", 1
        unless -f "$TARBALLS/nginx-$OTHER.tar.gz";

    # .build/nginx-1.30.4 (scripts/nginx-source.sh), shared with t/009
    make_path("$ROOT/.build");
    chomp(my $tree = `flock '$ROOT/.build/nginx-source.lock' \\
                      '$ROOT/scripts/nginx-source.sh' $OTHER`);
    ok(-f "$tree/src/core/nginx.h", "nginx $OTHER tree: $tree")
        or diag "scripts/nginx-source.sh $OTHER failed";

    for my $source ($tree, "$TARBALLS/nginx-$OTHER.tar.gz") {
        my $kind = -d $source ? 'tree' : 'tarball';
        my $dest = "$tmp/dest-$kind";
        my $build = "$tmp/build-$kind/objs";

        my ($rc, $out, $err) = install($dest, '--nginx', $DEBIAN_NGINX,
                                       '--source', $source,
                                       '--builddir', $build);
        subtest "the $OTHER $kind against nginx $debian_version" => sub {
            is($rc, 2, 'exit status 2') or diag $err;
            my ($line) = grep { /does not match/ } split /\n/, $err;
            ok(defined $line, 'one line says the source does not match')
                or return;
            like($line, qr/\b\Q$OTHER\E\b.*\b\Q$debian_version\E\b/,
                 "it names both versions ($OTHER, $debian_version)");
            like($line, qr/\Q$source\E.*\Q$DEBIAN_NGINX\E/,
                 'and both paths');
            is_deeply([files_under($dest)], [], 'nothing in DESTDIR');
            ok(!-e "$tmp/build-$kind", 'no build directory, nothing built');
            unlike($err, qr/configuring|building/, 'no configure, no make');
            is($out, '', 'nothing on stdout');
        };
    }
}

###########################################################################
# Debian's nginx-dev: build, check, install into DESTDIR

my $dev_h = slurp('/usr/share/nginx/src/src/core/nginx.h') // '';
my ($dev_version) = $dev_h =~ /#define NGINX_VERSION\s+"([^"]+)"/;

SKIP: {
    skip "Debian's nginx-dev ($debian_version) is not installed", 1
        unless ($dev_version // '') eq $debian_version;

    my $dest = "$tmp/dest";
    my $build = "$ROOT/.build/test-install/debian/objs";
    my ($rc, $out, $err) = install($dest, '--nginx', $DEBIAN_NGINX,
                                   '--builddir', $build);
    is($rc, 0, "install.sh into DESTDIR: exit 0") or diag $err;
    like($err, qr{^install: source: /usr/share/nginx/src \(nginx \Q$debian_version\E\)}m,
         "the source is Debian's nginx-dev tree");
    like($err, qr/^install: \Q$DEBIAN_NGINX\E loads .*ngx_http_corelog_module\.so: ok$/m,
         'the load was checked with the target nginx');

    my $so = "$dest/usr/lib/nginx/modules/ngx_http_corelog_module.so";
    ok(-f $so, 'the .so in DESTDIR/usr/lib/nginx/modules/');
    is(sprintf('%04o', (stat $so)[2] & 07777), '0644', 'mode 0644');

    my $enabled = "$dest/etc/nginx/modules-enabled/50-mod-http-corelog.conf";
    my $nginx_conf = slurp('/etc/nginx/nginx.conf') // '';
    SKIP: {
        skip '/etc/nginx/nginx.conf does not include modules-enabled/', 1
            unless $nginx_conf =~ m{^\s*include\s+\S*modules-enabled/\*\.conf}m;
        is(slurp($enabled),
           "load_module /usr/lib/nginx/modules/ngx_http_corelog_module.so;\n",
           'modules-enabled/50-mod-http-corelog.conf loads the installed path');
    }

    my $example = slurp("$dest/etc/nginx/conf.d/corelog.conf.example");
    ok(defined $example, 'conf.d/corelog.conf.example');
    like($example // '', qr/^corelog_postgres\s/m, 'with corelog_postgres');
    like($example // '', qr/corelog_api\s+\w+;/, 'a route');
    like($example // '', qr/corelog_token_check\s+\w+;/, 'its auth location');

    # Debian's nginx -t on what was installed: the load_module line (the
    # installed path, in DESTDIR) and the example inside http{}
    my $load = slurp($enabled) // '';
    $load =~ s{(load_module\s+)}{$1$dest};
    my $t = "$tmp/nginx-t";
    make_path($t);
    my $user = $> == 0 ? 'user nobody ' . (getgrgid((getpwnam 'nobody')[3]))[0] . ';' : '';
    my $temp = join ' ', map { "${_}_temp_path $t/$_;" }
                         qw(client_body proxy fastcgi uwsgi scgi);
    spew("$t/nginx.conf", <<"EOF");
$load
$user
pid $t/nginx.pid;
events { }
http {
    access_log off;
    $temp
    include $dest/etc/nginx/conf.d/corelog.conf.example;
}
EOF
    my $test = `$DEBIAN_NGINX -p $t/ -c $t/nginx.conf -e stderr -t 2>&1`;
    like($test, qr/test is successful/,
         "$DEBIAN_NGINX -t: the installed .so and the example")
        or diag $test;

    # nginx.org's layout: nginx.conf without modules-enabled/ (DESTDIR's
    # nginx.conf is read first): the line is printed, nginx.conf untouched
    my $dest2 = "$tmp/dest-org";
    my $own = "user nginx;\nevents { }\nhttp { include conf.d/*.conf; }\n";
    make_path("$dest2/etc/nginx");
    spew("$dest2/etc/nginx/nginx.conf", $own);
    ($rc, $out, $err) = install($dest2, '--nginx', $DEBIAN_NGINX,
                                '--builddir', $build);
    is($rc, 0, 'nginx.conf without modules-enabled/: exit 0') or diag $err;
    like($err, qr{^\s*load_module /usr/lib/nginx/modules/ngx_http_corelog_module\.so;$}m,
         'prints the load_module line to add');
    ok(!-e "$dest2/etc/nginx/modules-enabled", 'writes no modules-enabled/');
    is(slurp("$dest2/etc/nginx/nginx.conf"), $own, 'leaves nginx.conf alone');
    ok(-f "$dest2/usr/lib/nginx/modules/ngx_http_corelog_module.so",
       'installs the .so');
}

done_testing;
