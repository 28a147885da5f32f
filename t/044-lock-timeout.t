#!/usr/bin/perl

# A table locked for 20 s under steady writes (issue 12): PostgreSQL's
# statement_timeout, sent by the module on every connection, ends each
# waiting statement (rolled back) before corelog_query_timeout, so the
# module keeps its connections: its sessions never outnumber its pool, no
# request waits longer than corelog_query_timeout, every error answer is
# a 503 whose row is not stored, not even once the lock is gone, and every
# 202 is stored.  (A connection that has not prepared the statement yet
# waits for the lock in its Parse: PostgreSQL ends that the same way.)

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 1);

my $conf = $t->nginx_conf;
$conf =~ s/corelog_query_timeout \w+;/corelog_query_timeout 2s;/ or die;
open my $fh, '>', $t->dir . '/nginx.conf' or die "$!";
print $fh $conf;
close $fh;

$t->run;

my $pool = 4;       # corelog_connections of the shipped configuration
my $timeout = 2;    # corelog_query_timeout

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

sub wave { Corelog::Test::channel_wave($tok, $ch, $_[0]) }

sub sessions {
    return scalar $t->dbh->selectrow_array(q{
        SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'nginx-corelog'});
}

is($t->http(@{ wave(1)->[0] })->{status}, 202, 'warm-up: 202');

my $lock = $t->lock_table('corelog.channel_logs');
my $locked = time;

my (%status, @answers, $peak, $slowest);
$peak = 0;
$slowest = 0;

while (time - $locked < 20) {
    my $reqs = wave(8);
    my $start = time;
    my $res = $t->http_many($reqs, timeout => 30);
    my $took = time - $start;
    $slowest = $took if $took > $slowest;

    for my $i (0 .. $#$res) {
        my $r = $res->[$i];
        $status{$r->{status}}++;
        push @answers, [$r->{status}, Corelog::Test::label_of($reqs->[$i]),
                        $r->{json}];
    }

    my $s = sessions();
    $peak = $s if $s > $peak;
}

$lock->rollback;
$lock->disconnect;

diag sprintf "answers while locked: %s; nginx's sessions at peak: %d; "
           . "slowest wave: %.2f s",
     join(', ', map { "$_ x $status{$_}" } sort keys %status), $peak,
     $slowest;

ok($status{503}, 'the lock was felt: 503s');
is_deeply([sort keys %status], [503], 'every answer while locked is a 503')
    or diag explain \%status;
my @odd = grep { !($_->[2] && $_->[2]{name}) } @answers;
is(scalar @odd, 0, 'each with a JSON error');

cmp_ok($peak, '<=', $pool, "nginx's sessions never outnumber its pool");
cmp_ok($slowest, '<', $timeout + 0.5,
       'no request waited longer than corelog_query_timeout');

# after the lock: the writes go again, and nothing answered 503 shows up
my $ok;
for (1 .. 50) {
    $ok = $t->http(@{ wave(1)->[0] })->{status} == 202 and last;
    sleep 0.1;
}
ok($ok, 'writes succeed once the lock is gone');
sleep 1;

my %stored = map { $_->[0] => 1 } @{ $t->dbh->selectall_arrayref(
    q{SELECT label FROM corelog.channel_logs WHERE label LIKE 'w%'}) };
my @phantom = grep { $_->[0] != 202 && $stored{$_->[1]} } @answers;
is(scalar @phantom, 0, 'no write answered with an error is stored');

unlike($t->error_log,
       qr/statement (unanswered|timed out)|PostgreSQL is unavailable/,
       'no connection was given up');
like($t->error_log,
     qr/corelog: (statement|preparing) failed with SQLSTATE 57014: canceling statement due to statement timeout/,
     "PostgreSQL's statement_timeout ended the statements");

$t->done;
done_testing;
