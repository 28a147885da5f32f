#!/usr/bin/perl

# DNS that changes (issue 12): with nginx's "resolver" at the http level, a
# connection resolves the conninfo's host name again before it connects
# (nginx's asynchronous resolver), tries every address of the name in
# order, and keeps the addresses it last knew when the name does not
# resolve; without a resolver, the addresses of the start serve until a
# reload.
#
# Two clusters on the same port: A on 127.0.0.1, B on 127.0.0.3 (all of
# 127/8 is the loopback).  A small DNS server (Corelog::DNS) answers for
# the name as the test says.  The name is "localhost": the master resolves
# names with getaddrinfo() (here /etc/hosts: 127.0.0.1, cluster A), which
# never asks the test's DNS server; nginx's resolver asks only that one.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Socket qw(getaddrinfo getnameinfo NI_NUMERICHOST SOCK_STREAM);
use Time::HiRes qw(sleep time);
use Corelog::Test;

BEGIN {
    plan skip_all => 'Net::DNS::Nameserver (libnet-dns-perl) is missing'
        unless eval { require Corelog::DNS; 1 };
}

my $NAME = 'localhost';

{
    my ($err, @ai) = getaddrinfo($NAME, undef, { socktype => SOCK_STREAM });
    my @addrs = map { (getnameinfo($_->{addr}, NI_NUMERICHOST))[1] } @ai;
    plan skip_all => "$NAME is not 127.0.0.1 here (@addrs)"
        if $err || !grep { $_ eq '127.0.0.1' } @addrs;
}

# what a recovery may take: the resolver's valid=1s, the reconnect backoff
# (at most 1 s), a connect; the bound is generous, the figure is noted
my $RECOVERY = 15 * Corelog::Test::timeout_factor();

# how long nginx may keep an answer with valid=1s: its clock for that
# counts whole seconds, so up to 2 s
my $CACHED = 2.2;

my $t = Corelog::Test->new;                               # A, 127.0.0.1
my $tb = Corelog::Test->new(pg_listen => '127.0.0.3',      # B, same port
                           pg_port => $t->pg_port);
my $dns = Corelog::DNS->new(dir => $t->dir, port => $t->port2,
                            names => { $NAME => ['127.0.0.1'] });

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

# the same account, token and channel in B
for my $table (qw(corelog.accounts corelog.tokens corelog.channels)) {
    my $from = $t->dbh;
    my $to = $tb->dbh;
    my ($line, @rows) = ('');
    $from->do("COPY $table TO STDOUT");
    push @rows, $line while $from->pg_getcopydata($line) >= 0;
    $to->do("COPY $table FROM STDIN");
    $to->pg_putcopydata($_) for @rows;
    $to->pg_putcopyend;
}

my $port = $t->pg_port;
my $conninfo = "host=$NAME port=$port dbname=corelog user=postgres";

sub conf {
    my ($resolver) = @_;
    $t->write_shipped_conf(conninfo => $conninfo);
    return unless $resolver;
    my $conf = $t->nginx_conf;
    $conf =~ s/(corelog_postgres [^\n]*\n)/$1    $resolver\n/
        or die "no corelog_postgres line";
    open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
}

my $n = 0;
sub post {
    my $label = 'dns ' . ++$n;
    my $r = $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => encode_json({ channel_id => $ch, label => $label }));
    return ($r->{status}, $label);
}

# posts until a 202, at most $secs: (seconds taken, statuses, labels of 202)
sub until_202 {
    my ($secs) = @_;
    my $start = time;
    my (@seen, @stored);
    while (time < $start + $secs) {
        my ($status, $label) = post();
        push @seen, $status;
        if ($status == 202) {
            push @stored, $label;
            last;
        }
        sleep 0.1;
    }
    return (time - $start, \@seen, \@stored);
}

sub rows {
    my ($c, @labels) = @_;
    return 0 unless @labels;
    return scalar $c->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs WHERE label = ANY(?)',
        undef, \@labels);
}

sub log_since {
    my ($offset) = @_;
    return substr $t->error_log, $offset;
}

conf('resolver 127.0.0.1:' . $dns->port . ' valid=1s;'
     . ' resolver_timeout 1s;');
$t->run;

subtest 'at start: writes go to the name\'s address, A' => sub {
    my @stored;
    for (1 .. 3) {
        my ($status, $label) = post();
        is($status, 202, "write $_: 202");
        push @stored, $label;
    }
    is(rows($t, @stored), 3, 'the rows are in A');
    is(rows($tb, @stored), 0, 'none in B');
    ok($dns->queries($NAME) > 0, 'nginx asked the DNS server');
};

subtest 'the name moves to B and A stops: writes go to B, no reload' => sub {
    my $offset = length $t->error_log;
    $dns->set($NAME => ['127.0.0.3']);
    $t->pg_stop;

    my ($took, $seen, $stored) = until_202($RECOVERY);
    is($seen->[-1], 202, "a 202 within $RECOVERY s")
        or diag "statuses: @$seen";
    ok(!grep({ $_ != 503 && $_ != 202 } @$seen), 'only 503 before it')
        or diag "statuses: @$seen";
    note sprintf 'recovered on B %.1f s after A stopped', $took;

    my @more;
    for (1 .. 3) {
        my ($status, $label) = post();
        is($status, 202, "then write $_: 202");
        push @more, $label;
    }
    is(rows($tb, @$stored, @more), @$stored + 3, 'the rows are in B');

    like(log_since($offset),
         qr/\[notice\].*\Qcorelog: PostgreSQL host "$NAME" resolves to\E
            \Q 127.0.0.3\E/x,
         'the error log says where the name went');
};

subtest 'two addresses, the first with nothing listening: the second' => sub {
    $dns->set($NAME => ['127.0.0.4', '127.0.0.3']);
    sleep $CACHED;    # the last answer is gone from nginx's cache
    my $offset = length $t->error_log;
    $tb->pg_restart;

    my ($took, $seen, $stored) = until_202($RECOVERY);
    is($seen->[-1], 202, "a 202 within $RECOVERY s")
        or diag "statuses: @$seen";
    note sprintf 'recovered %.1f s after B restarted', $took;

    my @more;
    for (1 .. 5) {
        my ($status, $label) = post();
        is($status, 202, "then write $_: 202");
        push @more, $label;
    }
    is(rows($tb, @$stored, @more), @$stored + 5, 'the rows are in B');

    like(log_since($offset),
         qr/\Qcorelog: PostgreSQL host "$NAME" resolves to\E
            \Q 127.0.0.4, 127.0.0.3\E/x,
         'both addresses, in the order of the answer');
};

for my $case (['SERVFAIL', 'Server failure'],
              ['SILENT', 'Operation timed out']) {
    my ($answer, $reason) = @$case;
    subtest "the name does not resolve ($answer): the last addresses" => sub {
        $dns->set($NAME => $answer);
        sleep $CACHED;
        my $offset = length $t->error_log;
        $tb->pg_restart;

        my ($took, $seen, $stored) = until_202($RECOVERY);
        is($seen->[-1], 202, "a 202 within $RECOVERY s")
            or diag "statuses: @$seen";
        note sprintf 'recovered %.1f s after B restarted', $took;
        is(rows($tb, @$stored), 1, 'the row is in B');

        like(log_since($offset),
             qr/\[error\].*\Qcorelog: could not resolve PostgreSQL host\E
                \Q "$NAME": $reason, connecting to its last known\E
                \Q addresses\E/x,
             'an error line says so');

        # the name resolves again: said once, as a notice
        $dns->set($NAME => ['127.0.0.3']);
        sleep $CACHED;
        $offset = length $t->error_log;
        $tb->pg_restart;
        ($took, $seen, $stored) = until_202($RECOVERY);
        is($seen->[-1], 202, 'a 202 when it resolves again')
            or diag "statuses: @$seen";
        like(log_since($offset),
             qr/\[notice\].*\Qcorelog: PostgreSQL host "$NAME" resolves\E
                \Q to 127.0.0.3\E/x,
             'a notice says so');
    };
}

subtest 'a worker whose connections wait for the DNS exits at once' => sub {
    conf('resolver 127.0.0.1:' . $dns->port . ' valid=1s;'
         . ' resolver_timeout 60s;');
    ok($t->reload, 'reloaded with resolver_timeout 60s');
    my ($took, $seen) = until_202($RECOVERY);
    is($seen->[-1], 202, 'a 202') or diag "statuses: @$seen";

    # B restarts: the connections are lost, and each waits for an answer
    # that does not come
    $dns->set($NAME => 'SILENT');
    sleep $CACHED;
    my $asked = $dns->queries($NAME);
    $tb->pg_restart;
    my $until = time + 5;
    sleep 0.1 while $dns->queries($NAME) == $asked && time < $until;
    ok($dns->queries($NAME) > $asked, 'the connections asked the DNS');
    sleep 0.3;

    # the old worker's resolutions are cancelled: it does not wait for them
    my $offset = length $t->error_log;
    my @old = $t->worker_pids;
    my $start = time;
    ok($t->reload, 'reloaded');
    my $gone = time - $start;
    ok(!grep({ kill 0, $_ } @old), 'the old worker has exited');
    cmp_ok($gone, '<', 5 * Corelog::Test::timeout_factor(),
           'within 5 s of the reload, not the 60 s of resolver_timeout');
    note sprintf 'old worker gone %.1f s after the reload', $gone;
    like(log_since($offset), qr/worker process \d+ exited with code 0/,
         'exited with code 0');
};

subtest 'without a resolver: the addresses of the start, until reload' => sub {
    $dns->set($NAME => ['127.0.0.3']);
    $t->pg_start;
    conf();
    ok($t->reload, 'reloaded without "resolver"');
    my $asked = $dns->queries($NAME);

    my ($took, $seen, $stored) = until_202($RECOVERY);
    is($seen->[-1], 202, 'a 202') or diag "statuses: @$seen";
    is(rows($t, @$stored), 1, 'the row is in A, the address of the start');
    is(rows($tb, @$stored), 0, 'not in B, where the DNS points');

    # A stops: no move to B, 503 until A is back
    $t->pg_stop;
    my @seen;
    my $until = time + 3;
    while (time < $until) {
        push @seen, (post())[0];
        sleep 0.2;
    }
    ok(!grep({ $_ != 503 } @seen), 'only 503 while A is down (3 s)')
        or diag "statuses: @seen";

    $t->pg_start;
    ($took, $seen, $stored) = until_202($RECOVERY);
    is($seen->[-1], 202, 'a 202 when A is back') or diag "statuses: @$seen";
    is(rows($t, @$stored), 1, 'in A');
    is($dns->queries($NAME), $asked, 'nginx did not ask the DNS server');
};

$t->done;
$tb->done;
$dns->stop;
done_testing;
