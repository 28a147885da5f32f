#!/usr/bin/perl

# PostgreSQL restarted while writes are in flight: every answer is a 202
# or a JSON 503/504, no 202 is lost, no 503 is stored, nothing crashes,
# and writes succeed again afterwards.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

sub wave { Corelog::Test::channel_wave($tok, $ch, $_[0]) }

is($t->http(@{ wave(1)->[0] })->{status}, 202, 'warm-up: 202');

# restart PostgreSQL from a child while the parent sends waves of writes
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    sleep 0.3;
    $t->{owner_pid} = -1;    # the child must not clean up the test
    $t->pg_restart;
    exit 0;
}

my (%status, @answers);
for (1 .. 12) {
    my $reqs = wave(50);
    my $res = $t->http_many($reqs, timeout => 30);
    for my $i (0 .. $#$res) {
        my $r = $res->[$i];
        $status{$r->{status}}++;
        my $label = Corelog::Test::label_of($reqs->[$i]);
        push @answers, [$r->{status}, $label, $r->{json}];
    }
    sleep 0.1;
}
waitpid $pid, 0;
$t->{pg_running} = 1;

my @odd = grep { $_->[0] !~ /^(202|503|504)$/
                 || ($_->[0] != 202 && !($_->[2] && $_->[2]{name})) }
          @answers;
is(scalar @odd, 0, 'every answer is a 202 or a JSON 503/504')
    or diag explain \%status;
ok($status{503} || $status{504}, 'the restart was felt')
    or diag explain \%status;

my %stored = map { $_->[0] => 1 } @{ $t->dbh->selectall_arrayref(
    q{SELECT label FROM corelog.channel_logs WHERE label LIKE 'w%'}) };

my @lost = grep { $_->[0] == 202 && !$stored{$_->[1]} } @answers;
is(scalar @lost, 0, 'every 202 is stored');

my @phantom = grep { $_->[0] == 503 && $stored{$_->[1]} } @answers;
is(scalar @phantom, 0, 'no 503 is stored');

my $ok;
for (1 .. 50) {
    $ok = $t->http(@{ wave(1)->[0] })->{status} == 202 and last;
    sleep 0.2;
}
ok($ok, 'writes succeed after the restart');

$t->done;
done_testing;
