#!/usr/bin/perl

# A flood of bad tokens must not cost a valid caller their write: with the
# shipped configuration and one worker, 3000 requests with random bearer
# tokens (half of them shaped like real ones, so that they need a lookup)
# and, 50 ms later, 50 writes with a valid cached token: every valid write
# is answered 202, and the error log stays short.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use DBI;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new(pg_conf => 'log_min_duration_statement = 0');
$t->write_shipped_conf(workers => 1);

# no limit_req for this test: the flood must reach the module
my $conf = $t->nginx_conf;
$conf =~ s/^\s*limit_req\s[^\n]*\n//mg;
$conf =~ s/^\s*limit_conn\s[^\n]*\n//mg;
open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
print $fh $conf;
close $fh;

$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc);

sub write_req {
    my ($label, $token) = @_;
    return [POST => '/api/v1/log/create',
            headers => { Authorization => "Bearer $token",
                         'Content-Type' => 'application/json' },
            body => encode_json({ channel_id => $ch, label => $label })];
}

sub rows {
    my ($like) = @_;
    return scalar $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs WHERE label LIKE $1',
        undef, $like);
}

# the valid token is cached: one write
is($t->http(@{ write_req('warm', $tok) })->{status}, 202, 'a first write');

sub random_hex { join '', map { sprintf '%02x', int rand 256 } 1 .. $_[0] }

# Six children connect 500 clients each, wait for the word, then send
# every request at once and read the answers.  flood() returns once all
# are connected, with the function that says the word.
sub flood {
    my ($n) = @_;
    my (@pids, @go);
    for my $k (1 .. 6) {
        pipe my $r, my $w or die "pipe: $!";
        pipe my $ready_r, my $ready_w or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $w;
            close $ready_r;
            srand($$ ^ time);
            my @socks;
            for (1 .. $n / 6) {
                my $bad = $_ % 2 ? 'clg_' . random_hex(32)
                                 : random_hex(8) . '-' . random_hex(4);
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $t->port,
                                              Timeout => 10) or next;
                push @socks, [$s, $t->_build_request(@{ write_req('flood',
                                                                  $bad) })];
            }
            syswrite $ready_w, "1";
            sysread $r, my $buf, 1;
            for (@socks) {
                my ($s, $req) = @$_;
                syswrite $s, $req;
            }
            my $sel = IO::Select->new(map { $_->[0] } @socks);
            my $deadline = time + 60;
            while ($sel->count && time < $deadline) {
                for my $s ($sel->can_read(1)) {
                    my $n = sysread $s, my $b, 65536;
                    next if !defined $n && $!{EAGAIN};
                    next if $n;
                    $sel->remove($s);
                    close $s;
                }
            }
            POSIX::_exit(0);
        }
        close $r;
        close $ready_w;
        sysread $ready_r, my $buf, 1;
        push @pids, $pid;
        push @go, $w;
    }
    return (\@pids, sub { syswrite $_, "1" for @go; close $_ for @go });
}

subtest 'without a flood: 50 valid writes, all 202' => sub {
    my $res = $t->http_many([ map { write_req("calm $_", $tok) } 1 .. 50 ]);
    my %st;
    $st{$_->{status}}++ for @$res;
    is_deeply(\%st, { 202 => 50 }, '50 x 202');
};

my $log_from = length $t->error_log;
my ($lookups_before) = $t->dbh->selectrow_array(
    q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
       WHERE query LIKE '%corelog.tokens%'});

subtest '3000 bad tokens, then 50 valid writes: all 202' => sub {
    my ($pids, $go) = flood(3000);
    $go->();
    sleep 0.05;
    my $res = $t->http_many([ map { write_req("valid $_", $tok) } 1 .. 50 ],
                            timeout => 60);
    my %st;
    $st{$_->{status}}++ for @$res;
    is_deeply(\%st, { 202 => 50 }, 'every valid write: 202')
        or diag explain [ map { $_->{body} } grep { $_->{status} != 202 }
                          @$res ]->[0];
    waitpid $_, 0 for @$pids;
    is(rows('valid %'), 50, '50 rows');
    is(rows('flood'), 0, 'no flood row');
};

subtest 'the error log is not an amplifier' => sub {
    my @lines = split /\n/, substr $t->error_log, $log_from;
    cmp_ok(scalar @lines, '<=', 30, 'at most 30 lines for the burst')
        or diag join "\n", @lines[0 .. 9];
};

subtest 'tokens of the wrong shape cost no lookup' => sub {
    my ($after) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    my $statements = $after - $lookups_before;
    # 1500 well-shaped tokens go to PostgreSQL, many in one statement; the
    # 1500 others never do
    cmp_ok($statements, '<', 300, "lookups batched ($statements statements)");

    my $before = $after;
    for (1 .. 20) {
        my $r = $t->http(@{ write_req('shape', 'not-a-clg-token-' . $_) });
        is($r->{status}, 401, 'a token of the wrong shape: 401') if $_ == 1;
    }
    ($after) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    is($after - $before, 0, '20 of them: no lookup');
};

subtest 'an unknown token of the right shape: looked up once' => sub {
    my $bad = 'clg_' . random_hex(32);
    my ($before) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    for (1 .. 5) {
        my $r = $t->http(@{ write_req('unknown', $bad) });
        is($r->{status}, 401, "attempt $_: 401");
    }
    my ($after) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    is($after - $before, 1, 'one lookup: the answer is cached');
};

# the shipped limit_req, at a rate a test can reach: 429 before any auth

$t->stop;
$t->write_shipped_conf(workers => 1);
$conf = $t->nginx_conf;
$conf =~ s/rate=\d+r\/s/rate=5r\/s/ or die 'no limit_req_zone rate';
$conf =~ s/burst=\d+/burst=10/ or die 'no limit_req burst';
open $fh, '>', $t->dir . '/nginx.conf' or die $!;
print $fh $conf;
close $fh;
$t->run;

subtest 'the shipped limit_req answers 429 before the auth step' => sub {
    my ($before) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    my %st;
    my $json = 0;
    for (1 .. 40) {
        my $r = $t->http(@{ write_req('limited', 'clg_' . random_hex(32)) });
        $st{$r->{status}}++;
        $json++ if $r->{status} == 429
                   && ($r->{json}{name} // '') eq 'TooManyRequests';
    }
    cmp_ok($st{429} // 0, '>=', 20, 'most of 40 quick requests: 429')
        or diag explain \%st;
    is($json, $st{429} // 0, 'each 429 a JSON TooManyRequests');
    my ($after) = $t->dbh->selectrow_array(
        q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
           WHERE query LIKE '%corelog.tokens%'});
    cmp_ok($after - $before, '<=', 20, 'the 429s cost no token lookup');
    my $r = $t->http(POST => '/v1/logtanks',
                     headers => { 'X-Auth-Token' => $tok,
                                  'Content-Type' => 'application/json' },
                     body => '{}');
    is($r->{status}, 429, 'the logtank route too');
    like($r->{json}{error_code} // '', qr/^CLG\.0429$/, 'in its own shape');
};

# look-ups stuck behind a lock: they keep to their own bound and to half
# the connections, and writes go on

$t->stop;
$t->write_shipped_conf(workers => 1);
$conf = $t->nginx_conf;
$conf =~ s/^\s*limit_(?:req|conn)\s[^\n]*\n//mg;
$conf =~ s/corelog_queue_max \d+;/corelog_queue_max 10;\n    corelog_token_queue_max 20;/
    or die;
$conf =~ s/corelog_connections \d+;/corelog_connections 4;/ or die;
open $fh, '>', $t->dir . '/nginx.conf' or die $!;
print $fh $conf;
close $fh;
$t->run;

subtest 'look-ups stuck behind a lock: writes go on' => sub {
    # the valid token is cached again in this nginx
    is($t->http(@{ write_req('warm again', $tok) })->{status}, 202,
       'a first write');

    my $lock = DBI->connect('dbi:Pg:dbname=corelog;host=127.0.0.1;port='
                            . $t->pg_port, 'postgres', '',
                            { AutoCommit => 0, RaiseError => 1,
                              PrintError => 0 });
    $lock->do('LOCK TABLE corelog.tokens IN ACCESS EXCLUSIVE MODE');

    # 50 look-ups in waves, each wave after the last one's statement left
    my @stuck;
    for my $wave (1 .. 10) {
        push @stuck, $t->http_start(@{ write_req('stuck',
                                                 'clg_' . random_hex(32)) })
            for 1 .. 5;
        sleep 0.05;
    }

    my ($blocked) = $t->dbh->selectrow_array(
        q{SELECT count(*) FROM pg_stat_activity
           WHERE application_name = 'nginx-corelog'
             AND wait_event_type = 'Lock'});
    cmp_ok($blocked, '<=', 2, "look-ups hold at most half the connections "
                              . "($blocked blocked)");
    cmp_ok($blocked, '>=', 1, 'and wait for the lock');

    # more writes than corelog_queue_max would hold with the look-ups
    my $res = $t->http_many([ map { write_req("beside $_", $tok) } 1 .. 5 ],
                            timeout => 10);
    my %st;
    $st{$_->{status}}++ for @$res;
    is_deeply(\%st, { 202 => 5 }, 'five writes: 202, while the look-ups wait');

    # a second later, one more look-up over the bound: its line says how
    # many were not logged since the first
    sleep 1.1;
    my $late = $t->http(@{ write_req('late', 'clg_' . random_hex(32)) });
    is($late->{status}, 503, 'one more look-up over the bound: 503');

    $lock->rollback;
    $lock->disconnect;

    my (%looked, $full);
    for (@stuck) {
        my $r = $t->http_finish($_, timeout => 30);
        $looked{$r->{status}}++;
        $full++ if $r->{status} == 503
                   && ($r->{json}{message} // '') =~ /token store/;
    }
    is(($looked{401} // 0) + ($looked{503} // 0), 50,
       'the 50 look-ups: 401 once the lock went, or 503')
        or diag explain \%looked;
    cmp_ok($looked{503} // 0, '>=', 10,
           'over their own bound (20 waiting): 503');
    is($full, $looked{503}, 'each "The token store is unavailable"');

    my @lines = $t->error_log
        =~ /corelog: token lookup queue full \(20\), answering 503(.*)/g;
    is(scalar @lines, 2, 'two log lines for all those 503s') or diag explain \@lines;
    like($lines[1] // '', qr/^ \(and (\d+) more not logged\),/,
         'the second says how many were not logged');
    my ($more) = ($lines[1] // '') =~ /and (\d+) more/;
    is($more, ($looked{503} // 0) - 1, 'all the others: ' . ($more // '?'));
};

$t->done;
done_testing;
