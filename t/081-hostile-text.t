#!/usr/bin/perl

# Text that comes from clients or from PostgreSQL: every answer is valid
# UTF-8 JSON (even when jansson's error message quotes half a character),
# the error log gets one line per message with the client's control bytes
# escaped, and PostgreSQL's errors and notices are logged as SQLSTATE and
# primary message only, never the DETAIL that quotes the row.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Encode ();
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(error_log_level => 'info');
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom', project => 'proj');
my $ch = $t->make_channel($acc);
my $s = $t->seed_corelog($acc);

my %routes = (
    core_log => "/core-log/$s->{traffic_source_id}",
    channel_log => '/api/v1/log/create',
    logtank => '/v1/logtanks',
);

sub post {
    my ($uri, $body) = @_;
    my %h = ('Content-Type' => 'application/json');
    if ($uri eq '/v1/logtanks') {
        $h{'X-Auth-Token'} = $tok;
    } else {
        $h{Authorization} = "Bearer $tok";
    }
    return $t->http(POST => $uri, headers => \%h, body => $body);
}

sub valid_utf8 {
    my ($bytes) = @_;
    my $copy = $bytes;
    return eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 };
}

# bodies whose parse error quotes broken or control bytes
my @bodies = (
    qq({"logtank":{"resource_id":"ab\\u00e\xc7\xa3x"}}),
    qq({"label":"caf\xc3),
    qq({"label":"\xe2\x82"}),
    qq({"a":\xff\xfe}),
    qq({"a":"x\x01y"}),
    qq({"a":\x1b[31mred}),
    qq({"a":1,\x00}),
    qq(\xc3\xa9\xc3),
);

for my $route (sort keys %routes) {
    subtest "$route: every error answer is valid UTF-8 JSON" => sub {
        for my $i (0 .. $#bodies) {
            my $r = post($routes{$route}, $bodies[$i]);
            is($r->{status}, 400, "body $i: 400");
            ok(valid_utf8($r->{body}), "body $i: the answer is valid UTF-8")
                or diag explain $r->{body};
            ok(eval { JSON::PP->new->utf8->decode($r->{body}); 1 },
               "body $i: the answer is JSON") or diag $@;
        }
    };
}

subtest 'random bytes after a string: answers are valid UTF-8' => sub {
    srand(81);
    my $bad = 0;
    for (1 .. 200) {
        my $b = '{"label":"' . join('', map { chr(0x80 + int rand 128) }
                                         1 .. 1 + int rand 6)
              . (rand() < 0.5 ? '"' : '') . ',"x":';
        my $r = post('/api/v1/log/create', $b);
        $bad++ unless $r->{status} == 400 && valid_utf8($r->{body})
                      && eval { JSON::PP->new->utf8->decode($r->{body}) };
    }
    is($bad, 0, '200 bodies: each a 400 in valid UTF-8 JSON');
};

subtest 'custom references at the ends of int64 are stored exactly' => sub {
    my $r = post('/api/v1/log/create',
                 '{"channel_id":"' . $ch . '","label":"int64",'
                 . '"custom_references":{"min":-9223372036854775808,'
                 . '"max":9223372036854775807,"zero":0,"neg":-1}}');
    is($r->{status}, 202, 'status 202') or diag $r->{body};
    my ($refs) = $t->dbh->selectrow_array(
        q{SELECT custom_references::text FROM corelog.channel_logs
           WHERE label = 'int64'});
    is($refs, '{"max": 9223372036854775807, "min": -9223372036854775808, '
              . '"neg": -1, "zero": 0}', 'as sent');
};

# PostgreSQL's errors and notices: no DETAIL, no row data, one line

$t->dbh->do(q{
    ALTER TABLE corelog.channel_logs
      ADD CONSTRAINT no_secret CHECK (label IS DISTINCT FROM 'secret-label-5e1f')
});
$t->dbh->do(q{
    CREATE FUNCTION corelog.test_notice() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.label = 'noticed-label-77aa' THEN
            RAISE NOTICE 'a test notice'
                USING DETAIL = 'the row says ' || NEW.label;
        END IF;
        RETURN NEW;
    END $$
});
$t->dbh->do(q{
    CREATE TRIGGER test_notice BEFORE INSERT ON corelog.channel_logs_default
      FOR EACH ROW EXECUTE FUNCTION corelog.test_notice()
});

subtest 'a failing row: 500, logged without its data' => sub {
    my $from = length $t->error_log;
    my $r = post('/api/v1/log/create',
                 encode_json({ channel_id => $ch, label => 'secret-label-5e1f',
                               body => "multi\nline" }));
    is($r->{status}, 500, 'status 500');
    my $log = substr $t->error_log, $from;
    like($log, qr/corelog: statement failed with SQLSTATE 23514: new row for relation "channel_logs_default" violates check constraint "no_secret" \(table channel_logs_default, constraint no_secret\)/,
         'SQLSTATE, primary message, table and constraint on one line')
        or diag $log;
    unlike($log, qr/secret-label/, 'no row data');
    unlike($log, qr/DETAIL|Failing row/, 'no DETAIL');
};

subtest 'a notice: logged without its DETAIL' => sub {
    my $from = length $t->error_log;
    my $r = post('/api/v1/log/create',
                 encode_json({ channel_id => $ch,
                               label => 'noticed-label-77aa' }));
    is($r->{status}, 202, 'status 202');
    my $log = substr $t->error_log, $from;
    like($log, qr/corelog: PostgreSQL says: NOTICE: a test notice \(SQLSTATE 00000\)/,
         'the notice, on one line') or diag $log;
    unlike($log, qr/noticed-label|the row says/, 'no DETAIL');

    # a notice with every row: at most one line a second
    $from = length $t->error_log;
    for (1 .. 5) {
        post('/api/v1/log/create',
             encode_json({ channel_id => $ch, label => 'noticed-label-77aa' }));
    }
    my @n = substr($t->error_log, $from) =~ /(PostgreSQL says: NOTICE)/g;
    cmp_ok(scalar @n, '<=', 1, 'five more such rows: at most one more line');
};

subtest 'the error log: one line per message, no raw control bytes' => sub {
    my @lines = split /\n/, $t->error_log;
    my @cont = grep { !m{^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[} } @lines;
    is(scalar @cont, 0, 'every line starts with a time stamp')
        or diag explain [@cont[0 .. ($#cont > 4 ? 4 : $#cont)]];
    my @ctl = grep { /corelog:/ && /[\x00-\x08\x0b-\x1f\x7f]/ } @lines;
    is(scalar @ctl, 0, 'no control bytes in corelog lines')
        or diag explain $ctl[0];
    my @bad = grep { /corelog:/ && !valid_utf8($_) } @lines;
    is(scalar @bad, 0, 'corelog lines are valid UTF-8');
    like($t->error_log, qr/corelog: client sent invalid JSON: .*\\x1b/,
         'an escape byte is logged as \\x1b');
};

$t->done;
done_testing;
