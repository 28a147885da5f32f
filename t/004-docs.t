#!/usr/bin/perl

# The docs against the code: every directive of the module's ngx_command_t
# table has a section in docs/directives.md with the contexts the table
# gives it, and every section a directive; every variable of its
# ngx_http_variable_t table an entry in its "Embedded variables", and every
# entry a variable; every ```nginx example in README.md and docs/*.md
# passes `nginx -t` (with nothing listening on the conninfo's port: it is
# parsed, not connected); the relative links of the
# docs reach a file and, with #anchor, a heading of it; and the
# least-privilege role of docs/operations.md serves all three routes and
# can do nothing else.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Corelog::Test;

my $ROOT = $Corelog::Test::ROOT;

my @DOCS = ('README.md', map { s{^\Q$ROOT\E/}{}r } glob "$ROOT/docs/*.md");

sub slurp {
    my $file = shift;
    open my $fh, '<', "$ROOT/$file" or die "$file: $!\n";
    local $/;
    return scalar <$fh>;
}

###########################################################################
# directives

# { name => { http => 1, server => 1, ... } } from every ngx_command_t
# entry of the sources.
my %CONTEXT = (
    NGX_HTTP_MAIN_CONF => 'http',
    NGX_HTTP_SRV_CONF  => 'server',
    NGX_HTTP_LOC_CONF  => 'location',
    NGX_HTTP_SIF_CONF  => 'if in server',
    NGX_HTTP_LIF_CONF  => 'if in location',
    NGX_HTTP_LMT_CONF  => 'limit_except',
);

my %source;
for my $file (glob("$ROOT/*.c"), glob("$ROOT/src/*.c")) {
    my $text = do { local (@ARGV, $/) = $file; <> };
    while ($text =~ /\{\s*ngx_string\("(corelog_\w+)"\),\s*(NGX_[A-Z0-9_|\s]+),/g) {
        my ($name, $flags) = ($1, $2);
        $source{$name} = { map { $CONTEXT{$_} ? ($CONTEXT{$_} => 1) : () }
                           split /\s*\|\s*/, $flags };
    }
}

cmp_ok(scalar keys %source, '>=', 14, 'the ngx_command_t table is found')
    or diag 'no ngx_string("corelog_...") entries in *.c, src/*.c';

# { name => section text } of docs/directives.md: "### corelog_x"
my $directives = slurp('docs/directives.md');
my %doc;
while ($directives =~ /^### (\S+)[ \t]*\n(.*?)(?=^#{1,3} |\z)/msg) {
    $doc{$1} = $2;
}

for my $name (sort keys %source) {
    ok(exists $doc{$name}, "$name has a section in docs/directives.md");
}

for my $name (sort keys %doc) {
    ok(exists $source{$name}, "section $name is a directive of the source");
}

for my $name (sort grep { exists $doc{$_} } keys %source) {
    my $s = $doc{$name};

    subtest "$name: Syntax, Default, Context" => sub {
        like($s, qr/^\*\*Syntax:\*\* `\Q$name\E[ ;]/m, 'Syntax: line');
        my ($syntax) = $s =~ /^(\*\*Syntax:\*\*.*?)^\*\*Default/ms;
        my @forms = ($syntax // '') =~ /`([^`]+)`/g;
        is(scalar(grep { !/^\Q$name\E[ ;]/ } @forms), 0,
           'every form starts with the name');
        like($s, qr/^\*\*Default:\*\* (?:—|`\Q$name\E [^`]+;`)/m,
             'Default: line');

        my ($ctx) = $s =~ /^\*\*Context:\*\* (.*)$/m;
        ok(defined $ctx, 'Context: line') or return;
        $ctx =~ s/<br>//g;
        my %doc_ctx = map { s/^\s+|\s+$//gr =~ s/`//gr => 1 } split /,/, $ctx;
        is_deeply([sort keys %doc_ctx], [sort keys %{$source{$name}}],
                  'Context: as in the ngx_command_t table');
    };
}

###########################################################################
# variables: every entry of the module's ngx_http_variable_t table has an
# entry in "Embedded variables" of docs/directives.md, and every entry
# there a variable

my %variable;
for my $file (glob("$ROOT/*.c"), glob("$ROOT/src/*.c")) {
    my $text = do { local (@ARGV, $/) = $file; <> };
    $variable{$1} = 1
        while $text =~ /\{\s*ngx_string\("(corelog_\w+)"\),\s*NULL,/g;
}

cmp_ok(scalar keys %variable, '>=', 7, 'the variables table is found')
    or diag 'no { ngx_string("corelog_..."), NULL, ... } entries';

my ($vars_doc) = $directives =~ /^## Embedded variables\n(.*?)(?=^## |\z)/ms;
my %var_doc = map { $_ => 1 } ($vars_doc // '') =~ /^`\$(corelog_\w+)`\n: /mg;

for my $name (sort keys %variable) {
    ok($var_doc{$name}, "\$$name is in docs/directives.md's variables");
}

for my $name (sort keys %var_doc) {
    ok($variable{$name}, "documented \$$name is a variable of the source");
}

###########################################################################
# error-log messages: every "corelog: ..." text of an ngx_log_error() or
# ngx_conf_log_error() call is in the catalogue of docs/operations.md (its
# constant parts: the text between the format's % conversions)

my $catalogue = slurp('docs/operations.md');
$catalogue = $1 if $catalogue =~ /^## Error-log messages\n(.*?)(?=^## |\z)/ms;
my $messages = 0;

for my $file (glob("$ROOT/*.c"), glob("$ROOT/src/*.c")) {
    my $text = do { local (@ARGV, $/) = $file; <> };
    $text =~ s{/\*.*?\*/}{}gs;
    (my $short = $file) =~ s{^\Q$ROOT\E/}{};

    while ($text =~ /\bngx_(?:conf_)?log_error\s*\((.*?)\);/gs) {
        my $call = $1;
        next unless $call =~ /("corelog: (?:[^"\\]|\\.)*"(?:\s*"(?:[^"\\]|\\.)*")*)/;
        my $format = join '', $1 =~ /"((?:[^"\\]|\\.)*)"/g;
        $format =~ s/\\"/"/g;
        $format =~ s/^corelog: //;
        $messages++;

        my @missing = grep { length(s/\s//gr) >= 6 && index($catalogue, $_) < 0 }
                      split /%\*?[0-9]*(?:ui|uz|xi|[VsMOdizTpc])/, $format;
        is_deeply(\@missing, [],
                  "$short: \"corelog: $format\" is in docs/operations.md")
            or diag 'add it to "Error-log messages" in docs/operations.md';
    }
}

cmp_ok($messages, '>=', 40, 'the error-log messages are found');

###########################################################################
# nginx examples: nginx -t

my $t = Corelog::Test->new(pg => 0);
my $dir = $t->dir;

# nginx -t opens the pid file and the default access log under its prefix:
# an nginx built with its own prefix (make asan) needs logs/ there
mkdir "$dir/logs" or -d "$dir/logs" or die "$dir/logs: $!\n";
my $module = $Corelog::Test::MODULE;

# A whole configuration (main context): the module of this tree, temp
# paths in the test directory, log files there too.
sub main_conf {
    my $conf = shift;

    $conf =~ s{^(\s*load_module\s+)\S+;}{$1"$module";}m
        or $conf = "load_module \"$module\";\n$conf";
    $conf = "$conf\nevents { }\n" unless $conf =~ /^\s*events\s*\{/m;
    # nginx -t creates the pid file: in the test directory, not /run
    $conf =~ s{^(\s*pid\s+)[^;]+;}{$1"$dir/nginx.pid";}m
        or $conf = "pid \"$dir/nginx.pid\";\n$conf";

    my $temp = join '', map { "    ${_}_temp_path \"$dir/$_\";\n" }
                        qw(client_body proxy fastcgi uwsgi scgi);
    $temp .= qq{    access_log "$dir/access.log";\n}
        unless $conf =~ /^\s*access_log\s/m;
    $conf =~ s/^(\s*http\s*\{[^\n]*\n)/$1$temp/m;
    $conf =~ s{(?<=[\s"])/var/log/nginx/}{$dir/}g;

    return $conf;
}

# A fragment in the http, server or location context: the first one where
# no directive "is not allowed here".
sub fragment_confs {
    my $text = shift;

    $text =~ s{(?<=[\s"])/var/log/nginx/}{$dir/}g;

    my $http = '';
    $http .= qq{corelog_postgres "host=127.0.0.1 port=1 dbname=corelog";\n}
        unless $text =~ /^\s*corelog_postgres\s/m;
    $http .= "client_max_body_size 256k; client_body_buffer_size 256k;\n"
        unless $text =~ /client_(?:max_body|body_buffer)_size/;
    # nginx -t opens the default access log (/var/log/nginx/ for Debian's)
    $http .= qq{access_log "$dir/access.log";\n}
        unless $text =~ /^\s*access_log\s/m;

    my $listen = "listen 127.0.0.1:" . $t->port . ";";

    return map { main_conf("http {\n$http$_\n}\n") } (
        $text,
        "server {\n$listen\n$text\n}",
        "server {\n$listen\nlocation /_docs {\n$text\n}\n}",
    );
}

sub nginx_t {
    my $conf = shift;
    open my $fh, '>', "$dir/nginx.conf" or die "$dir/nginx.conf: $!\n";
    print $fh $conf;
    close $fh;
    return $t->nginx_test_conf;
}

my $blocks = 0;

for my $file (@DOCS) {
    my $text = slurp($file);

    while ($text =~ /^```nginx[ \t]*\n(.*?)^```/msg) {
        my $block = $1;
        my $line = 1 + (() = substr($text, 0, $-[0]) =~ /\n/g);
        $blocks++;

        my @confs = $block =~ /^\s*(?:http|events)\s*\{|^\s*load_module\s/m
                    ? (main_conf($block))
                    : fragment_confs($block);

        my ($rc, $out);
        for my $conf (@confs) {
            ($rc, $out) = nginx_t($conf);
            last unless $out =~ /is not allowed here/;
        }

        ok($rc == 0 && $out !~ /\[(?:emerg|warn)\].*corelog/,
           "$file:$line: the nginx example passes nginx -t")
            or diag $out;
    }
}

cmp_ok($blocks, '>=', 4, 'the docs have nginx examples');

$t->done;

###########################################################################
# links

# GitHub's anchor of a heading: lower case, punctuation dropped, spaces "-".
sub anchors {
    my $text = shift;
    $text =~ s/^```.*?^```//msg;
    my %a;
    for my $h ($text =~ /^#{1,6}\s+(.+?)\s*$/mg) {
        my $id = lc $h;
        $id =~ s/[^a-z0-9 _-]//g;
        $id =~ s/ /-/g;
        my $n = 0;
        $n++ while $a{$n ? "$id-$n" : $id};
        $a{$n ? "$id-$n" : $id} = 1;
    }
    $a{$_} = 1 for $text =~ /<a (?:id|name)="([^"]+)"/g;
    return \%a;
}

for my $file (@DOCS) {
    my $text = slurp($file);
    (my $base = $file) =~ s{[^/]*$}{};
    my $prose = $text =~ s/^```.*?^```//msgr;
    my @bad;

    for my $link ($prose =~ /\]\(([^)\s]+)\)/g) {
        next if $link =~ m{^[a-z]+:};
        my ($path, $anchor) = split /#/, $link, 2;
        my $target = $path eq '' ? $file : $base . $path;
        1 while $target =~ s{(^|/)(?!\.\./)[^/]+/\.\./}{$1};

        if (!-e "$ROOT/$target") {
            push @bad, "$link: no file $target";
        } elsif (defined $anchor && $target =~ /\.md$/
                 && !anchors(slurp($target))->{$anchor})
        {
            push @bad, "$link: no heading #$anchor in $target";
        }
    }

    is_deeply(\@bad, [], "$file: relative links reach their file and heading");
}

###########################################################################
# the least-privilege role of docs/operations.md

my $ops = slurp('docs/operations.md');
my ($role_sql) = $ops =~ /^```sql\n((?:(?!^```).)*CREATE ROLE corelog_nginx.*?)^```/ms;
ok(defined $role_sql, 'docs/operations.md has the CREATE ROLE block')
    or done_testing, exit;

my $pg = Corelog::Test->new;
$pg->dbh->do($role_sql);

my $conninfo = 'host=127.0.0.1 port=' . $pg->pg_port
               . ' dbname=corelog user=corelog_nginx';
$pg->write_shipped_conf(conninfo => $conninfo);
$pg->run;

my $acc = $pg->make_account('docs');
my $tok = $pg->make_token($acc, domain => 'dom', project => 'proj');
my $seed = $pg->seed_corelog($acc);
my $ch = $pg->make_channel($acc);
my $grp = $pg->make_log_group($acc, 'proj');
my $str = $pg->make_log_stream($grp);

my %bearer = (Authorization => "Bearer $tok");
my %xauth = ('X-Auth-Token' => $tok);

my $core = {
    status => 200, method => 'get', elapsedTime => 1.5,
    corePathnameId => $seed->{core_pathname_id},
    requestId => $seed->{request_id}, responseId => $seed->{response_id},
};
my $logtank = { logtank => { resource_type => 'LISTENER',
                             resource_id => 'r-1', log_group_id => $grp,
                             log_stream_id => $str } };

my @cases = (
    ['a core log', '/core-log/' . $seed->{traffic_source_id}, \%bearer,
     $core, 201],
    ['the same core log again', '/core-log/' . $seed->{traffic_source_id},
     \%bearer, $core, 409],
    ['a core log of an unknown traffic source',
     '/core-log/' . Corelog::Test::uuid(), \%bearer, $core, 404],
    ['a channel log with an alert', '/api/v1/log/create', \%bearer,
     { channel_id => $ch, label => 'l', alert => JSON::PP::true,
       tags => 'a,b', custom_references => { k => 'v' } }, 202],
    ['a channel log of an unknown channel', '/api/v1/log/create', \%bearer,
     { channel_id => Corelog::Test::uuid(), label => 'l' }, 404],
    ['a logtank', '/v1/logtanks', \%xauth, $logtank, 201],
    ['the same logtank again', '/v1/logtanks', \%xauth, $logtank, 409],
    ['an unknown token', '/api/v1/log/create',
     { Authorization => 'Bearer clg_' . ('0' x 64) },
     { channel_id => $ch, label => 'l' }, 401],
);

for my $c (@cases) {
    my ($name, $uri, $headers, $body, $status) = @$c;
    my $r = $pg->http(POST => $uri, headers => $headers, json => $body);
    is($r->{status}, $status, "as corelog_nginx: $name: $status")
        or diag $r->{raw};
}

unlike($pg->error_log, qr/SQLSTATE/, 'no statement failed');

my $nginx_dbh = DBI->connect('dbi:Pg:dbname=corelog;host=127.0.0.1;port='
                             . $pg->pg_port, 'corelog_nginx', '',
                             { RaiseError => 0, PrintError => 0,
                               AutoCommit => 1 });

for my $sql ('SELECT * FROM corelog.core_logs',
             'SELECT body FROM corelog.channel_logs',
             'SELECT * FROM corelog.logtanks',
             'DELETE FROM corelog.core_log_claims',
             'UPDATE corelog.tokens SET revoked_at = now()',
             'INSERT INTO corelog.accounts (name) VALUES (\'x\')',
             'CREATE TABLE corelog.x (i int)')
{
    ok(!defined $nginx_dbh->do($sql)
       && $nginx_dbh->state eq '42501', "as corelog_nginx: $sql: denied")
        or diag $nginx_dbh->errstr // 'allowed';
}

$nginx_dbh->disconnect;

$pg->done;

done_testing;
