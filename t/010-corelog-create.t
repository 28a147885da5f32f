#!/usr/bin/perl

# POST /core-log/{trafficSourceId}: the 201 answer and the stored row,
# levels, methods, optional and bounded fields, ids either case.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf;
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $s = $t->seed_corelog($acc);
my $ts = $s->{traffic_source_id};

sub post {
    my ($path_id, $body) = @_;
    return $t->http(POST => "/core-log/$path_id",
        headers => { 'Authorization' => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => ref $body ? encode_json($body) : $body);
}

sub fresh_body {
    my (%over) = @_;
    my ($rq, $rs) = $t->make_request_response($ts);
    return { status => 200, method => 'GET', elapsedTime => 1,
             corePathnameId => $s->{core_pathname_id},
             requestId => $rq, responseId => $rs, %over };
}

sub row {
    my ($id) = @_;
    return $t->dbh->selectrow_hashref(<<'SQL', undef, $id);
SELECT id::text, traffic_source_id::text, core_pathname_id::text,
       request_id::text, response_id::text, status, method, level,
       elapsed_time, traffic_user_id,
       to_char(created_at AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at
  FROM corelog.core_logs WHERE id = $1
SQL
}

# the complete object, the stored row holding the same values

my $body = fresh_body(method => 'get', elapsedTime => 12.5,
                      requestId => undef);
my ($rq) = $t->make_request_response($ts);
$body->{requestId} = uc $rq;
$body->{id} = '00000000-0000-7000-8000-000000000000';
$body->{level} = 'fatal';
$body->{createdAt} = '2000-01-01T00:00:00.000Z';
$body->{somethingElse} = { nested => [1, 2] };

my $r = post($ts, $body);
is($r->{status}, 201, '201 Created');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON answer');
is($r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');

my $j = $r->{json};
is_deeply([sort keys %$j],
          [sort qw(id trafficSourceId corePathnameId requestId responseId
                   status method level elapsedTime trafficUserId createdAt)],
          'every field of the object, nothing else');
like($j->{id},
     qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
     'id is a new UUIDv7');
isnt($j->{id}, $body->{id}, 'the client cannot set id');
is($j->{trafficSourceId}, $ts, 'trafficSourceId from the path');
is($j->{corePathnameId}, $s->{core_pathname_id}, 'corePathnameId');
is($j->{requestId}, lc $rq, 'requestId sent upper case, answered canonical');
is($j->{responseId}, $body->{responseId}, 'responseId');
is($j->{status}, 200, 'status');
is($j->{method}, 'GET', 'method answered upper case');
is($j->{level}, 'info', 'level from the status, not from the client');
is($j->{elapsedTime}, 12.5, 'elapsedTime keeps fractions');
ok(exists $j->{trafficUserId} && !defined $j->{trafficUserId},
   'trafficUserId null when absent');
like($j->{createdAt}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
     'createdAt is RFC 3339 UTC with milliseconds');
isnt($j->{createdAt}, $body->{createdAt}, 'the client cannot set createdAt');

my ($skew) = $t->dbh->selectrow_array(
    q{SELECT abs(extract(epoch FROM now() - $1::timestamptz))},
    undef, $j->{createdAt});
cmp_ok($skew, '<', 60, 'createdAt is now');

my $row = row($j->{id});
ok($row, 'the row is stored');
is_deeply($row, {
    id => $j->{id}, traffic_source_id => $ts,
    core_pathname_id => $j->{corePathnameId}, request_id => lc $rq,
    response_id => $j->{responseId}, status => 200, method => 'GET',
    level => 'info', elapsed_time => 12.5, traffic_user_id => undef,
    created_at => $j->{createdAt},
}, 'the stored row holds the answered values');

# levels: info below 400, warning 400-499, fatal 500 and up

for my $case ([100, 'info'], [399, 'info'], [400, 'warning'],
              [499, 'warning'], [500, 'fatal'], [599, 'fatal'])
{
    my ($status, $level) = @$case;
    subtest "status $status is $level" => sub {
        my $r = post($ts, fresh_body(status => $status));
        is($r->{status}, 201, 'status 201');
        is($r->{json}{level}, $level, 'answered level');
        is(row($r->{json}{id})->{level}, $level, 'stored level');
        is(row($r->{json}{id})->{status}, $status, 'stored status');
    };
}

# methods: any case in, upper case out and stored

for my $m (qw(get HEAD Post put pAtCh DELETE options CONNECT trace)) {
    subtest "method $m" => sub {
        my $r = post($ts, fresh_body(method => $m));
        is($r->{status}, 201, 'status 201');
        is($r->{json}{method}, uc $m, 'answered upper case');
        is(row($r->{json}{id})->{method}, uc $m, 'stored upper case');
    };
}

# elapsedTime: integers, fractions, the bounds

for my $e (0, 7, 0.1, 1234.5678, 86400000) {
    subtest "elapsedTime $e" => sub {
        my $r = post($ts, fresh_body(elapsedTime => $e));
        is($r->{status}, 201, 'status 201');
        is($r->{json}{elapsedTime}, $e, 'answered');
        is(row($r->{json}{id})->{elapsed_time}, $e, 'stored exactly');
    };
}

# trafficUserId: a string up to 255 characters, or null

for my $case (['user-42', 'user-42'], [undef, undef], ['', ''],
              ["\x{e9}" x 255, "\x{e9}" x 255],
              ["quote \" backslash \\ tab \t", "quote \" backslash \\ tab \t"])
{
    my ($in, $out) = @$case;
    my $name = defined $in ? 'trafficUserId ' . length($in) . ' chars'
                           : 'trafficUserId null';
    subtest $name => sub {
        my $r = post($ts, fresh_body(trafficUserId => $in));
        is($r->{status}, 201, 'status 201');
        is($r->{json}{trafficUserId}, $out, 'answered');
        is(row($r->{json}{id})->{traffic_user_id}, $out, 'stored');
    };
}

# ids of any version and either case

subtest 'upper case ids everywhere' => sub {
    my $b = fresh_body();
    $b->{$_} = uc $b->{$_} for qw(corePathnameId requestId responseId);
    my $r = post(uc $ts, $b);
    is($r->{status}, 201, 'status 201');
    is($r->{json}{trafficSourceId}, $ts, 'path id canonical');
    is($r->{json}{corePathnameId}, lc $b->{corePathnameId}, 'canonical');
};

# ids are distinct and increasing within a worker

my @ids = map { post($ts, fresh_body())->{json}{id} } 1 .. 20;
is(scalar(keys %{{ map { $_ => 1 } @ids }}), 20, '20 distinct ids');
is_deeply([sort @ids], \@ids, 'UUIDv7 ids sort in creation order');

$t->done;
done_testing;
