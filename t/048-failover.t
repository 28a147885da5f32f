#!/usr/bin/perl

# Failover without reload and without loss (issue 12).
#
# 1. A primary and a streaming standby (pg_basebackup) with synchronous
#    replication; the conninfo lists both with
#    target_session_attrs=read-write.  Under steady writes the primary
#    stops and, a second later, the standby is promoted: writes succeed
#    again soon after the promotion with no reload; in between the answers
#    are 503 (rolled back) or, for a statement in flight whose commit
#    PostgreSQL may have done, 504 (outcome unknown); every 202 is on the
#    promoted server, and no 503 is.
# 2. A server that turns read-only under the module's connections (25006):
#    the connection is closed, not kept, and the next one lands on the
#    server that takes writes.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(sleep time);
use Corelog::Test;

sub conninfo {
    my @ports = map { $_->pg_port } @_;
    return 'host=' . join(',', ('127.0.0.1') x @ports)
         . ' port=' . join(',', @ports)
         . ' dbname=corelog user=postgres target_session_attrs=read-write';
}

sub labels_on {
    my ($t) = @_;
    my %n;
    $n{$_->[0]}++ for @{ $t->dbh->selectall_arrayref(
        q{SELECT label FROM corelog.channel_logs WHERE label LIKE 'w%'}) };
    return \%n;
}

subtest 'the primary stops, the standby is promoted' => sub {
    my $p = Corelog::Test->new(pg_conf => "synchronous_commit = on\n"
                                        . "full_page_writes = on\n");
    my $acc = $p->make_account('acme');
    my $tok = $p->make_token($acc);
    my $ch = $p->make_channel($acc);

    my $s = Corelog::Test->new(pg => 0);
    $s->pg_standby_of($p);

    $p->dbh->do(q{ALTER SYSTEM SET synchronous_standby_names = 'standby'});
    $p->dbh->do('SELECT pg_reload_conf()');
    my $sync = '';
    for (1 .. 100) {
        $sync = $p->dbh->selectrow_array(
            q{SELECT sync_state FROM pg_stat_replication}) // '';
        last if $sync eq 'sync';
        sleep 0.1;
    }
    is($sync, 'sync', 'the standby replicates synchronously');

    $p->write_shipped_conf(workers => 2, conninfo => conninfo($p, $s));
    $p->run;

    my $wave = sub { Corelog::Test::channel_wave($tok, $ch, $_[0]) };
    is($p->http(@{ $wave->(1)->[0] })->{status}, 202, 'warm-up: 202');

    # the child stops the primary, waits a second, promotes the standby
    my $times = $p->dir . '/failover.times';
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $p->{owner_pid} = $s->{owner_pid} = -1;    # no cleanup here
        sleep 1;
        my $stop = time;
        $p->pg_stop;
        sleep 1;
        $s->pg_promote;
        my $promoted = time;
        open my $fh, '>', $times or die "$times: $!";
        print $fh "$stop $promoted\n";
        close $fh;
        exit 0;
    }

    my (@answers, $done);
    while (1) {
        my $reqs = $wave->(10);
        my $res = $p->http_many($reqs, timeout => 30);
        my $end = time;
        push @answers, map { [$res->[$_]{status},
                              Corelog::Test::label_of($reqs->[$_]),
                              $res->[$_]{json}, $end] } 0 .. $#$res;
        $done //= time if waitpid($pid, POSIX::WNOHANG()) == $pid;
        last if $done && time - $done > 3;
        sleep 0.05;
    }
    $p->{pg_running} = 0;    # stopped by the child

    open my $fh, '<', $times or die "$times: $!";
    my ($stop, $promoted) = split ' ', scalar <$fh>;
    close $fh;

    my %status;
    $status{$_->[0]}++ for @answers;
    # back: the first 202 after the last error answer
    my ($last_error) = map { $_->[3] } grep { $_->[0] != 202 } reverse @answers;
    my ($back) = grep { $_->[0] == 202 && $_->[3] > ($last_error // 1e10) }
                 @answers;
    my $recover = $back ? $back->[3] - $promoted : 99;
    my $stored = labels_on($s);
    my @phantom = grep { $_->[0] == 503 && $stored->{$_->[1]} } @answers;
    my @unknown = grep { $_->[0] == 504 } @answers;
    my @unknown_stored = grep { $stored->{$_->[1]} } @unknown;

    diag sprintf "answers: %s; writes again %.2f s after the promotion "
               . "(%.2f s after the primary stopped); 504s stored on the "
               . "promoted server: %d of %d",
         join(', ', map { "$_ x $status{$_}" } sort keys %status),
         $recover, $back ? $back->[3] - $stop : 99,
         scalar @unknown_stored, scalar @unknown;

    my @odd = grep { $_->[0] !~ /^(202|503|504)$/
                     || ($_->[0] != 202 && !($_->[2] && $_->[2]{name})) }
              @answers;
    is(scalar @odd, 0, 'every answer is a 202 or a JSON 503/504')
        or diag explain \%status;
    ok($status{503}, 'the failover was felt: 503s');
    cmp_ok($recover, '<', 3,
           'writes succeed again within 3 s of the promotion, no reload');

    my @lost = grep { $_->[0] == 202 && !$stored->{$_->[1]} } @answers;
    is(scalar @lost, 0, 'every 202 is on the promoted server');
    my @twice = grep { $stored->{$_} > 1 } keys %$stored;
    is(scalar @twice, 0, 'none twice');
    is(scalar @phantom, 0, 'no 503 is on the promoted server');

    my $r = $p->http(@{ $wave->(1)->[0] });
    is($r->{status}, 202, 'a write after the failover: 202');
    like($p->error_log, qr/corelog: PostgreSQL is available again/,
         'the error log says when it is back');

    $p->done;
    $s->done;
};

subtest 'a server that turns read-only: its connections are closed' => sub {
    my $a = Corelog::Test->new;
    my $acc = $a->make_account('acme');
    my $tok = $a->make_token($acc);
    my $ch = $a->make_channel($acc);

    # b: a copy of a (its fixtures too) that takes writes of its own
    my $b = Corelog::Test->new(pg => 0);
    $b->pg_standby_of($a);
    $b->pg_promote;

    $a->write_conf(<<'EOF2');
    corelog_connections 2;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/v1/log/create {
            corelog_auth_request /_corelog/auth;
            corelog_api channel_log;
        }

        location = /_corelog/auth {
            internal;
            corelog_token_check bearer;
        }
    }
EOF2
    my $conf = $a->nginx_conf;
    my $c = conninfo($a, $b);
    $conf =~ s/corelog_postgres "[^"]*"/corelog_postgres "$c"/ or die;
    open my $fh, '>', $a->dir . '/nginx.conf' or die "$!";
    print $fh $conf;
    close $fh;
    $a->run;

    my $wave = sub { Corelog::Test::channel_wave($tok, $ch, $_[0]) };
    my $first = $wave->(1)->[0];
    is($a->http(@$first)->{status}, 202, 'a write: 202');
    is(labels_on($a)->{ Corelog::Test::label_of($first) }, 1,
       'on the first server');

    # the first server turns read-only for every session, old and new
    $a->dbh->do('ALTER SYSTEM SET default_transaction_read_only = on');
    $a->dbh->do('SELECT pg_reload_conf()');
    sleep 0.5;

    my ($start, $on_b, %status) = (time);
    while (time - $start < 10) {
        my $req = $wave->(1)->[0];
        my $r = $a->http(@$req);
        $status{$r->{status}}++;
        if ($r->{status} == 202) {
            $on_b = labels_on($b)->{ Corelog::Test::label_of($req) };
            last;
        }
        sleep 0.1;
    }
    my $took = time - $start;
    diag sprintf "answers: %s; writes on the other server after %.2f s",
         join(', ', map { "$_ x $status{$_}" } sort keys %status), $took;

    ok($on_b, 'writes land on the server that takes them');
    cmp_ok($took, '<', 5, 'within seconds, no reload');
    like($a->error_log,
         qr/corelog: the server is read-only, closing the connection/,
         'the error log says why the connection was closed');

    $a->dbh->do('ALTER SYSTEM RESET default_transaction_read_only');
    $a->dbh->do('SELECT pg_reload_conf()');
    $a->done;
    $b->done;
};

done_testing;
