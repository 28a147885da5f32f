#!/usr/bin/perl

# The module says which release runs, and with what, where an operator
# looks: a notice in the error log when nginx starts and when it reloads
# (a dynamic module has no line in nginx -V).  The release is CHANGES's
# newest, the nginx version the binary's; the repository has a LICENSE.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;

my $root = "$FindBin::Bin/..";

open my $fh, '<', "$root/CHANGES" or die "CHANGES: $!\n";
my ($release) = map { /^Changes with corelog (\d+\.\d+\.\d+)\s/ ? $1 : () }
                <$fh>;
close $fh;
ok(defined $release, "CHANGES names a release ($release)");

open $fh, '<', "$root/src/ngx_http_corelog.h" or die "header: $!\n";
my ($defined) = map { /^#define NGX_HTTP_CORELOG_VERSION\s+"([^"]+)"/
                      ? $1 : () } <$fh>;
close $fh;
is($defined, $release, 'NGX_HTTP_CORELOG_VERSION is the newest in CHANGES');

ok(-s "$root/LICENSE", 'a LICENSE');

my $t = Corelog::Test->new;
my $nginx = $ENV{TEST_CORELOG_NGINX} // '/usr/sbin/nginx';
my ($nginx_version) = `$nginx -v 2>&1` =~ m{nginx/(\d+\.\d+\.\d+)};

$t->write_conf('', error_log_level => 'notice')->run;

my $line = qr/\[notice\] .*corelog: version \Q$release\E \(nginx \Q$nginx_version\E, libpq \d+\.\d+, jansson \d+\.\d+\)$/m;
my @at_start = $t->error_log =~ /$line/g;
is(scalar @at_start, 1, "at start: corelog: version $release (nginx"
                        . " $nginx_version, libpq, jansson), once");

ok($t->reload, 'reload');
my @after = $t->error_log =~ /$line/g;
is(scalar @after, 2, 'and again at the reload');

my $quiet = Corelog::Test->new;
$quiet->write_conf('', error_log_level => 'warn')->run;
unlike($quiet->error_log, qr/corelog: version/,
       'not at a level above notice');
$quiet->done;

$t->done;
done_testing;
