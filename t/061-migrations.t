#!/usr/bin/perl

# The schema migrations sql/NNN_*.sql and scripts/migrate.sh: a fresh
# database gets every migration, in order, each recorded in
# corelog.schema_version; a second run applies nothing; one migration at a
# time, by hand (psql -1 -f each file) or by concurrent runs, the schema
# comes out the same; a migration that fails, or does not record its
# number, leaves nothing behind and stops the run.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Basename qw(basename);
use File::Copy qw(copy);
use File::Path qw(make_path);
use POSIX ();
use Corelog::Test;

my $t = Corelog::Test->new;
my $root = "$FindBin::Bin/..";

my @files = map { basename $_ } sort glob "$root/sql/*.sql";
my @numbers = map { /^(\d{3})_[a-z0-9_]+\.sql$/ ? 0 + $1 : -1 } @files;

cmp_ok(scalar @files, '>=', 3, 'sql/ holds the migrations');
is_deeply(\@numbers, [1 .. @files], 'named NNN_name.sql, numbered 1 to N');

for my $f (@files) {
    open my $fh, '<', "$root/sql/$f" or die "$f: $!\n";
    my $sql = do { local $/; <$fh> };
    unlike($sql, qr/^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION)\s*;/mi,
           "$f: no transaction control (the runner's transaction)");
}

my %dbh;

sub db {
    my $name = shift;
    return $dbh{$name} //= DBI->connect($t->_dsn($name), 'postgres', '',
                                        { AutoCommit => 1, RaiseError => 1 });
}

sub versions {
    return db(shift)->selectcol_arrayref(
        'SELECT version FROM corelog.schema_version ORDER BY version');
}

$t->dbh->do("CREATE DATABASE $_") for qw(fresh stepwise byhand concurrent);

# a fresh database, then a second run

is($t->migrate('fresh'), join('', map { "migrate: $_\n" } @files),
   'a fresh database: every migration applied, in order');
is_deeply(versions('fresh'), \@numbers, 'each recorded in schema_version');

my $schema = $t->schema_dump('fresh');
like($schema, qr/CREATE TABLE corelog\.logtanks/, 'the schema dump');
is($t->migrate('fresh'), '', 'a second run applies nothing');
is($t->schema_dump('fresh'), $schema, 'and changes nothing');

# one at a time; by hand

for my $i (0 .. $#files) {
    is($t->migrate('stepwise', $numbers[$i]), "migrate: $files[$i]\n",
       "up to $numbers[$i]: $files[$i] alone");
}
is($t->schema_dump('stepwise'), $schema, 'one at a time: the same schema');

$t->psql_file('byhand', "$root/sql/$_") for @files;
is($t->schema_dump('byhand'), $schema, 'by hand: the same schema');
is_deeply(versions('byhand'), \@numbers, 'by hand: the same versions');

# concurrent runs on one database: each migration applied once

{
    local $ENV{PSQL} = $t->_psql;
    my @pids;
    for my $i (1 .. 4) {
        my $pid = fork // die "fork: $!\n";
        if ($pid == 0) {
            open STDOUT, '>', $t->dir . "/concurrent.$i" or POSIX::_exit(126);
            open STDERR, '>&', \*STDOUT;
            { no warnings 'exec';
              exec "$root/scripts/migrate.sh", $t->_conninfo('concurrent'); }
            POSIX::_exit(127);
        }
        push @pids, $pid;
    }
    my @rc = map { waitpid($_, 0); $? } @pids;
    is_deeply(\@rc, [0, 0, 0, 0], 'four concurrent runs succeed');

    my @lines;
    for my $i (1 .. 4) {
        open my $fh, '<', $t->dir . "/concurrent.$i" or die;
        push @lines, <$fh>;
    }
    is_deeply([sort @lines], [map { "migrate: $_\n" } @files],
              'concurrent runs: each migration applied once');
    is($t->schema_dump('concurrent'), $schema,
       'concurrent runs: the same schema');
}

# failures: a copy of scripts/ and sql/ with one more, broken, migration

my $tree = $t->dir . '/tree';
make_path("$tree/scripts", "$tree/sql");
copy("$root/scripts/migrate.sh", "$tree/scripts/") or die "copy: $!\n";
chmod 0755, "$tree/scripts/migrate.sh";
copy("$root/sql/$_", "$tree/sql/") or die "copy: $!\n" for @files;

my $next = sprintf '%03d_broken.sql', @files + 1;

sub try_broken {
    my ($sql) = @_;
    open my $fh, '>', "$tree/sql/$next" or die;
    print $fh $sql;
    close $fh;
    local $ENV{PSQL} = $t->_psql;
    return $t->_run(["$tree/scripts/migrate.sh", $t->_conninfo('fresh')]);
}

my $table_made = q{SELECT to_regclass('corelog.broken') IS NOT NULL};
my $n = @files + 1;

my ($rc, $out) = try_broken(<<"EOF");
CREATE TABLE corelog.broken (a int);
SELECT 1 / 0;
INSERT INTO corelog.schema_version (version) VALUES ($n);
EOF
is($rc, 3, 'a failing migration: the run fails');
like($out, qr/division by zero/, 'and shows the error');
ok(!db('fresh')->selectrow_array($table_made), 'nothing of it is left');
is_deeply(versions('fresh'), \@numbers, 'its number not recorded');

($rc, $out) = try_broken("CREATE TABLE corelog.broken (a int);\n");
is($rc, 3, 'a migration that does not record its number: the run fails');
like($out, qr/\Q$next\E did not record version $n/, 'and says so');
ok(!db('fresh')->selectrow_array($table_made), 'nothing of it is left');

($rc, $out) = try_broken(<<"EOF");
CREATE TABLE corelog.broken (a int);
INSERT INTO corelog.schema_version (version) VALUES ($n);
EOF
is($rc, 0, 'fixed, it is applied') or diag $out;
is($out, "migrate: $next\n", 'alone');
is_deeply(versions('fresh'), [@numbers, $n], 'and recorded');

$_->disconnect for values %dbh;
$t->done;
done_testing;
