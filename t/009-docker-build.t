#!/usr/bin/perl

# The Dockerfile's build steps, outside Docker (no engine here):
#   - nginx of the Dockerfile's NGINX_VERSION is built from its source with
#     the `configure arguments:` line recorded in the Dockerfile (the
#     official image's `nginx -V`), into .build/image-<version>/ (about two
#     minutes the first time, then cached);
#   - the builder stage's own install.sh command runs against that nginx
#     (its /usr/sbin/nginx) and the source tarball: the .so is built and
#     loads;
#   - the final stage's smoke test: the entry point's --config-only
#     configuration from the shipped conf/nginx.conf, and that nginx -t;
#   - compose.yaml hands the password to PostgreSQL and to the entry point
#     as a secret file, the way the entry point reads it;
#   - the entry point's password file: contents, escaping, mode 0600, owner;
#     and nginx's workers connect to a PostgreSQL that asks for a password
#     with it.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;
use CPAN::Meta::YAML;
use Cwd qw(abs_path);
use File::Path qw(make_path);
use File::Temp qw(tempdir);

my $ROOT = $Corelog::Test::ROOT;
my $TARBALLS = $ENV{NGINX_TARBALLS} // "$ROOT/../shared/nginx";
$TARBALLS = abs_path($TARBALLS) // $TARBALLS;
my $ENTRYPOINT = "$ROOT/scripts/docker-entrypoint.sh";
my $IS_ROOT = $> == 0;
my $NOBODY_GROUP = (getgrgid((getpwnam('nobody'))[3] // 65534))[0] // 'nogroup';

*slurp = \&Corelog::Test::_slurp;
*spew = \&Corelog::Test::_write;

my $tmp = tempdir('docker-build-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $tmp;    # the workers (nobody) read the password file below

my $dockerfile = slurp("$ROOT/Dockerfile") // die "no Dockerfile\n";

# The words of a shell command, as the shell reads them (%env: variables).
sub shell_words {
    my ($cmd, %env) = @_;
    local @ENV{keys %env} = values %env;
    open my $fh, '-|', 'bash', '-c', 'eval "set -- $1"; printf "%s\0" "$@"',
        '_', $cmd or die "bash: $!\n";
    local $/;
    my $out = <$fh>;
    close $fh;
    return split /\0/, $out // '';
}

# Run the entry point with %env; (exit status, output).
sub entrypoint {
    my ($mode, %env) = @_;
    local @ENV{keys %env} = values %env;
    my $out = `'$ENTRYPOINT' $mode 2>&1`;
    return ($? >> 8, $out);
}

###########################################################################
# the Dockerfile itself

my ($version) = $dockerfile =~ /^ARG NGINX_VERSION=(\S+)$/m;
ok(defined $version, "ARG NGINX_VERSION=$version") or BAIL_OUT('no ARG');
is(scalar(() = $dockerfile =~ /^FROM nginx:\$\{NGINX_VERSION\}( AS build)?$/mg),
   2, 'both stages FROM nginx:${NGINX_VERSION}');
unlike($dockerfile, qr/^FROM\s+\S+:latest\b|^FROM\s+[^\s:]+\s*$/m,
       'no image without a tag, no latest');
like($dockerfile, qr/^STOPSIGNAL SIGQUIT$/m, 'STOPSIGNAL SIGQUIT');

my ($conf_line) = $dockerfile =~ /^# configure arguments: (.+)$/m;
ok(defined $conf_line, 'the image\'s "configure arguments:" line is recorded')
    or BAIL_OUT('no "# configure arguments:" line in the Dockerfile');
my @conf_args = shell_words($conf_line);
cmp_ok(scalar @conf_args, '>', 30, scalar(@conf_args) . ' configure arguments');
ok((grep { $_ eq '--with-compat' } @conf_args), 'the image is --with-compat');

# RUN <install.sh> ... of the builder stage, and where the final stage
# copies the .so from
my ($build_run) = $dockerfile =~ m{^RUN (\S*scripts/install\.sh .*)$}m;
ok(defined $build_run, 'the builder runs scripts/install.sh')
    or BAIL_OUT('no RUN .../scripts/install.sh in the Dockerfile');
my @build_cmd = shell_words($build_run, NGINX_VERSION => $version);
my %opt;
for (my $i = 1; $i < @build_cmd; $i++) {
    my $o = $build_cmd[$i];
    $opt{$o} = $o =~ /^--(?:nginx|source|builddir)$/ ? $build_cmd[++$i] : 1;
}
is_deeply([sort keys %opt], [qw(--build-only --builddir --nginx --source)],
          'install.sh --build-only --nginx --source --builddir');
is($opt{'--nginx'}, '/usr/sbin/nginx', "against the image's own nginx");
like($opt{'--source'}, qr{/nginx-\Q$version\E\.tar\.gz$},
     "the source is nginx-$version.tar.gz");
like($dockerfile,
     qr{^COPY --from=build \Q$opt{'--builddir'}\E/ngx_http_corelog_module\.so /usr/lib/nginx/modules/$}m,
     'the final stage copies the .so the builder built');

# RUN CORELOG_CONNINFO=... corelog-entrypoint --config-only && nginx -t ...
my ($smoke) = $dockerfile =~ /^RUN (CORELOG_CONNINFO=.*?--config-only.*?)(?<!\\)\n(?!\s)/ms;
ok(defined $smoke, 'the final stage runs the entry point --config-only')
    or BAIL_OUT('no RUN CORELOG_CONNINFO=... --config-only');
$smoke =~ s/\\\n//g;
my ($placeholder) = $smoke =~ /CORELOG_CONNINFO='([^']*)'/;
like($smoke, qr/&&\s*nginx -t -p (\S+)\/ -c \1\/nginx\.conf -e stderr/,
     'then nginx -t on the configuration it wrote');

###########################################################################
# the builder's step and the smoke test against nginx $version built with
# the image's arguments

SKIP: {
    skip "no nginx-$version.tar.gz in $TARBALLS", 6
        unless -f "$TARBALLS/nginx-$version.tar.gz";

    make_path("$ROOT/.build");
    my $tree = `flock '$ROOT/.build/nginx-source.lock' \\
                '$ROOT/scripts/nginx-source.sh' $version`;
    chomp $tree;

    my $image = "$ROOT/.build/image-$version";
    my $log = `NGINX_VERSION=$version '$ROOT/scripts/nginx-build.sh' --bare \\
               '$image' @{[ map { "'$_'" } @conf_args ]} 2>&1`;
    is($?, 0, "nginx $version built with the image's arguments in $image")
        or diag $log;
    my $v = `'$image/nginx' -V 2>&1`;
    like($v, qr/^configure arguments: \Q$conf_line\E --builddir=/m,
         'its nginx -V prints the recorded arguments');

    # the builder's RUN, with this nginx as /usr/sbin/nginx
    my $builddir = "$ROOT/.build/test-install/image-$version/objs";
    my @cmd = ("$ROOT/scripts/install.sh", '--build-only',
               '--nginx', "$image/nginx",
               '--source', "$TARBALLS/nginx-$version.tar.gz",
               '--builddir', $builddir);
    my $out = `@{[ map { "'$_'" } @cmd ]} 2>'$tmp/build.err'`;
    my $so = "$builddir/ngx_http_corelog_module.so";
    is($? >> 8, 0, 'the builder step: install.sh --build-only')
        or diag slurp("$tmp/build.err");
    is($out, "$so\n", 'prints the .so built in --builddir');

    # the smoke test: the entry point's configuration, that nginx -t
    my $prefix = "$tmp/smoke";
    my ($rc, $conf_out) = entrypoint('--config-only',
        CORELOG_CONNINFO => $placeholder, CORELOG_PREFIX => $prefix,
        CORELOG_SHARE => "$ROOT/conf", CORELOG_MODULE => $so,
        CORELOG_USER => 'nobody', CORELOG_PASSWORD_FILE => '');
    is($rc, 0, 'corelog-entrypoint --config-only') or diag $conf_out;
    my $conf = slurp("$prefix/nginx.conf") // '';
    like($conf, qr/^load_module \Q$so\E;$/m, 'which loads the built .so');

    my $test = `'$image/nginx' -t -p '$prefix/' -c '$prefix/nginx.conf' -e stderr 2>&1`;
    like($test, qr/test is successful/, "nginx $version -t: test is successful")
        or diag $test;
    unlike($test, qr/\[(?:emerg|alert|crit|warn)\]/, 'without a warning');
}

###########################################################################
# compose.yaml: the secret, as the entry point reads it

my $compose = CPAN::Meta::YAML->read_string(slurp("$ROOT/compose.yaml")
                                            // die "no compose.yaml\n")->[0];
my $services = $compose->{services} // {};
my $entry_text = slurp($ENTRYPOINT);

like($services->{postgres}{image} // '', qr/^postgres:\d+$/,
     'postgres: a pinned major');
like($services->{postgres}{healthcheck}{test} // '', qr/pg_isready/,
     'postgres: a pg_isready healthcheck');

my $pw_file = $services->{postgres}{environment}{POSTGRES_PASSWORD_FILE};
my ($secret) = ($pw_file // '') =~ m{^/run/secrets/(\w+)$};
ok(defined $secret, 'postgres: POSTGRES_PASSWORD_FILE is a secret');
ok($compose->{secrets}{$secret // ''}{file}, "secret $secret is a file");

for my $name (qw(migrate corelog)) {
    my $s = $services->{$name} // {};
    my $env = $s->{environment} // {};
    subtest "$name: the password as the entry point expects it" => sub {
        is($env->{CORELOG_PASSWORD_FILE}, $pw_file,
           'CORELOG_PASSWORD_FILE is the secret');
        ok((grep { $_ eq $secret } @{ $s->{secrets} // [] }),
           "the service has secret $secret");
        unlike($env->{CORELOG_CONNINFO} // '', qr/password/,
               'no password in CORELOG_CONNINFO');
        is_deeply([grep { /PASS/ && !/_FILE$/ } keys %$env], [],
                  'no password variable');
        like($entry_text, qr/\$\{?CORELOG_PASSWORD_FILE\b/,
             'the entry point reads CORELOG_PASSWORD_FILE');
        like($entry_text, qr/passfile=/, 'and gives libpq a passfile=');
    };
}

is($services->{migrate}{command}, '["migrate"]', 'migrate runs the migrations');
like($entry_text, qr/^\s*run\|migrate\|--config-only\)/m,
     'a mode of the entry point');
is($services->{migrate}{depends_on}{postgres}{condition}, 'service_healthy',
   'migrate waits for a healthy postgres');
is($services->{corelog}{depends_on}{migrate}{condition},
   'service_completed_successfully', 'corelog waits for the migrations');
ok($services->{corelog}{healthcheck}{test}, 'corelog: a healthcheck');
ok((grep { /:8080$/ } @{ $services->{corelog}{ports} // [] }),
   'corelog: port 8080');

###########################################################################
# the entry point's password file

my $password = q{pa:ss\wo'rd "x" #1};
spew("$tmp/secret", "$password\n");

my $t = Corelog::Test->new;
my $prefix = $t->dir . '/entry';
my $role = 'corelog_pw';
my $conninfo = 'host=127.0.0.1 port=' . $t->pg_port . " dbname=corelog user=$role";

my ($rc, $out) = entrypoint('--config-only',
    CORELOG_CONNINFO => $conninfo, CORELOG_PREFIX => $prefix,
    CORELOG_SHARE => "$ROOT/conf", CORELOG_MODULE => $Corelog::Test::MODULE,
    CORELOG_PASSWORD_FILE => "$tmp/secret", CORELOG_USER => 'nobody');
is($rc, 0, 'entry point --config-only with a password file') or diag $out;

my $passfile = "$prefix/pgpass";
is(slurp($passfile), "*:*:*:*:pa\\:ss\\\\wo'rd \"x\" #1\n",
   'the passfile: *:*:*:*:<password>, : and \\ escaped, no newline kept');
my @st = stat $passfile;
is(sprintf('%04o', ($st[2] // 0) & 07777), '0600', 'mode 0600');
SKIP: {
    skip 'not root: owned by whoever runs it', 1 unless $IS_ROOT;
    is(scalar getpwuid($st[4] // -1), 'nobody', 'owned by the worker user');
}

my $conf = slurp("$prefix/nginx.conf") // '';
my ($pg_line) = $conf =~ /^\s*corelog_postgres\s+"([^"]*)";/m;
is($pg_line, "$conninfo passfile='$passfile'",
   'the conninfo has passfile=');
unlike($conf, qr/\Q$password\E|pa\\?:ss|password=/,
       'nginx.conf has no password');
if ($IS_ROOT) {
    like($conf, qr/^user nobody \Q$NOBODY_GROUP\E;$/m,
         'as root, the workers run as CORELOG_USER');
}

($rc, $out) = entrypoint('--config-only',
    CORELOG_CONNINFO => $conninfo, CORELOG_PREFIX => "$tmp/none",
    CORELOG_SHARE => "$ROOT/conf", CORELOG_PASSWORD_FILE => "$tmp/missing",
    CORELOG_USER => 'nobody');
isnt($rc, 0, 'a missing password file: the entry point fails');
like($out, qr/CORELOG_PASSWORD_FILE: cannot read \Q$tmp\E\/missing/,
     'and says which');

# nginx's workers (nobody) reach a PostgreSQL that asks for the password
# with that passfile: a role with a password, scram for it alone
$t->dbh->do(qq{CREATE ROLE $role LOGIN SUPERUSER PASSWORD }
            . $t->dbh->quote($password));
my $hba = $t->dir . '/pg/pg_hba.conf';
spew($hba, "host all $role 127.0.0.1/32 scram-sha-256\n" . slurp($hba));
$t->dbh->do('SELECT pg_reload_conf()');
my $nopw = DBI->connect('dbi:Pg:dbname=corelog;host=127.0.0.1;port='
                        . $t->pg_port, $role, '',
                        { PrintError => 0, RaiseError => 0 });
ok(!$nopw, "PostgreSQL asks $role for a password")
    or $nopw->disconnect;

# the migrate service: `corelog-entrypoint migrate`, psql with the passfile
# (the image's /usr/share/corelog/ holds scripts/ and sql/ as the repository)
$t->dbh->do("CREATE DATABASE corelog_migrate OWNER $role");
(my $migrate_conninfo = $conninfo) =~ s/dbname=corelog/dbname=corelog_migrate/;
($rc, $out) = entrypoint('migrate',
    CORELOG_CONNINFO => $migrate_conninfo, CORELOG_PREFIX => "$tmp/migrate",
    CORELOG_SHARE => $ROOT, CORELOG_PASSWORD_FILE => "$tmp/secret",
    CORELOG_USER => 'nobody');
is($rc, 0, 'entry point migrate: exit 0') or diag $out;
like($out, qr/^migrate: 001_\w+\.sql$/m, 'it applied the migrations');
ok(!-e "$tmp/migrate/nginx.conf", 'and wrote no nginx.conf');

$t->write_shipped_conf(conninfo => $pg_line);
$t->run;

my $acc = $t->make_account('entry');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);
my $r = $t->http(POST => '/api/v1/log/create',
                 headers => { Authorization => "Bearer $tok" },
                 json => { channel_id => $ch, label => 'passfile' });
is($r->{status}, 202, 'a write through the passfile\'s password: 202')
    or diag $r->{raw};
unlike($t->error_log, qr/password authentication failed|no password supplied/,
       'no authentication failure');

$t->done;

done_testing;
