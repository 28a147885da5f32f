#!/usr/bin/perl

# POST /core-log/{trafficSourceId}: 400 for every invalid field, 404 in the
# documented order, 409 for a used request or response; nothing stored on
# any error.

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

my $other = $t->make_account('other');
my $o = $t->seed_corelog($other);

my $s2 = $t->seed_corelog($acc);    # a second traffic source of acme

sub post_raw {
    my ($path_id, $raw) = @_;
    return $t->http(POST => "/core-log/$path_id",
        headers => { 'Authorization' => "Bearer $tok",
                     'Content-Type' => 'application/json' },
        body => $raw);
}

sub post { my ($id, $b) = @_; post_raw($id, encode_json($b)) }

sub rows {
    return $t->dbh->selectrow_array('SELECT count(*) FROM corelog.core_logs')
         + 1000 * $t->dbh->selectrow_array(
                      'SELECT count(*) FROM corelog.core_log_claims');
}

sub valid {
    my ($rq, $rs) = $t->make_request_response($ts);
    return { status => 200, method => 'GET', elapsedTime => 1,
             corePathnameId => $s->{core_pathname_id},
             requestId => $rq, responseId => $rs };
}

my $uuid = Corelog::Test::uuid();

# field validation: [name, field, value (undef: absent; \undef: null)]

my @fields = (
    ['status missing', 'status', undef],
    ['status null', 'status', \undef],
    ['status string', 'status', '200'],
    ['status fraction', 'status', 200.5],
    ['status boolean', 'status', JSON::PP::true],
    ['status 99', 'status', 99],
    ['status 600', 'status', 600],
    ['status huge', 'status', 1e30],
    ['method missing', 'method', undef],
    ['method null', 'method', \undef],
    ['method unknown', 'method', 'FETCH'],
    ['method empty', 'method', ''],
    ['method number', 'method', 1],
    ['method with space', 'method', 'GET '],
    ['elapsedTime missing', 'elapsedTime', undef],
    ['elapsedTime null', 'elapsedTime', \undef],
    ['elapsedTime negative', 'elapsedTime', -0.5],
    ['elapsedTime string', 'elapsedTime', '12'],
    ['elapsedTime too large', 'elapsedTime', 86400000.5],
    ['elapsedTime object', 'elapsedTime', {}],
    ['trafficUserId number', 'trafficUserId', 5],
    ['trafficUserId object', 'trafficUserId', { a => 1 }],
    ['trafficUserId array', 'trafficUserId', []],
    ['trafficUserId 256 chars', 'trafficUserId', 'x' x 256],
    ['corePathnameId missing', 'corePathnameId', undef],
    ['corePathnameId null', 'corePathnameId', \undef],
    ['corePathnameId not a uuid', 'corePathnameId', 'not-a-uuid'],
    ['corePathnameId no dashes', 'corePathnameId',
        join('', split /-/, $s->{core_pathname_id})],
    ['corePathnameId braces', 'corePathnameId',
        "{$s->{core_pathname_id}}"],
    ['corePathnameId trailing space', 'corePathnameId',
        "$s->{core_pathname_id} "],
    ['corePathnameId number', 'corePathnameId', 12345],
    ['requestId missing', 'requestId', undef],
    ['requestId bad hex', 'requestId', 'g' x 8 . substr($uuid, 8)],
    ['responseId missing', 'responseId', undef],
    ['responseId array', 'responseId', [$uuid]],
);

for my $case (@fields) {
    my ($name, $field, $value) = @$case;

    subtest $name => sub {
        my $b = valid();
        if (!defined $value) {
            delete $b->{$field};
        } elsif (ref $value eq 'SCALAR') {
            $b->{$field} = undef;
        } else {
            $b->{$field} = $value;
        }

        my $before = rows();
        my $r = post($ts, $b);
        is($r->{status}, 400, 'status 400');
        is($r->{json}{name}, 'BadRequest', 'name BadRequest');
        ok(exists $r->{json}{fieldErrors}{$field}, "fieldErrors names $field")
            or diag explain $r->{json};
        like($r->{json}{fieldErrors}{$field} // '', qr/^\Q$field\E /,
             'the message names the field');
        like($r->{json}{message}, qr/\Q$field\E/, 'message names the field');
        is(rows(), $before, 'nothing stored');
    };
}

subtest 'every invalid field is reported' => sub {
    my $r = post('nope', { status => 'x', method => 'x', elapsedTime => -1,
                           corePathnameId => 'x' });
    is($r->{status}, 400, 'status 400');
    is_deeply([sort keys %{$r->{json}{fieldErrors}}],
              [sort qw(trafficSourceId status method elapsedTime
                       corePathnameId requestId responseId)],
              'all seven fields named');
};

# the path id

for my $case (['not a uuid', 'abc'], ['empty', ''],
              ['too long', "${ts}0"], ['bad char', 'z' . substr($ts, 1)])
{
    my ($name, $id) = @$case;
    subtest "trafficSourceId $name" => sub {
        my $before = rows();
        my $r = post($id, valid());
        is($r->{status}, 400, 'status 400');
        ok(exists $r->{json}{fieldErrors}{trafficSourceId},
           'fieldErrors names trafficSourceId');
        is(rows(), $before, 'nothing stored');
    };
}

# malformed bodies: [name, raw body, message pattern]

my @bodies = (
    ['malformed JSON', '{"status": 200,', qr/^Malformed JSON/],
    ['trailing garbage', '{} x', qr/^Malformed JSON/],
    ['empty body', '', qr/empty/],
    ['an array', '[1,2]', qr/must be a JSON object/],
    ['a string', '"status"', qr/must be a JSON object/],
    ['null', 'null', qr/must be a JSON object/],
    ['invalid UTF-8', qq({"status":200,"method":"GET\xff"}), qr/UTF-8/],
    ['overlong UTF-8', qq({"trafficUserId":"\xc0\xaf"}), qr/UTF-8/],
    ['\\u0000 in a string', '{"trafficUserId":"a\u0000b"}', qr/u0000/],
    ['lone surrogate', '{"trafficUserId":"\ud800"}', qr/^Malformed JSON/],
    ['duplicate key', '{"status":200,"status":201}', qr/^Malformed JSON/],
    ['deep nesting', '[' x 5000 . ']' x 5000, qr/^Request body is nested too deeply/],
);

for my $case (@bodies) {
    my ($name, $raw, $re) = @$case;
    subtest $name => sub {
        my $before = rows();
        my $r = post_raw($ts, $raw);
        is($r->{status}, 400, 'status 400');
        is($r->{json}{name}, 'BadRequest', 'name BadRequest');
        like($r->{json}{message}, $re, 'clear message');
        ok(!exists $r->{json}{fieldErrors}, 'no fieldErrors');
        is(rows(), $before, 'nothing stored');
    };
}

# 404: [name, changes, message]; checked in the order of the messages

my ($rq2, $rs2) = $t->make_request_response($s2->{traffic_source_id});

my @missing = (
    ['unknown traffic source', { ts => $uuid }, 'Traffic source not found'],
    ['traffic source of another account',
        { ts => $o->{traffic_source_id} }, 'Traffic source not found'],
    ['everything of another account',
        { ts => $o->{traffic_source_id},
          corePathnameId => $o->{core_pathname_id},
          requestId => $o->{request_id}, responseId => $o->{response_id} },
        'Traffic source not found'],
    ['unknown core pathname', { corePathnameId => $uuid },
        'Core pathname not found'],
    ['core pathname of another traffic source',
        { corePathnameId => $s2->{core_pathname_id} },
        'Core pathname not found'],
    ['pathname and request unknown',
        { corePathnameId => $uuid, requestId => $uuid },
        'Core pathname not found'],
    ['unknown request', { requestId => $uuid }, 'Request not found'],
    ['request of another traffic source', { requestId => $rq2 },
        'Request not found'],
    ['request and response unknown',
        { requestId => $uuid, responseId => $uuid }, 'Request not found'],
    ['unknown response', { responseId => $uuid }, 'Response not found'],
    ['response of another traffic source', { responseId => $rs2 },
        'Response not found'],
    ['a request id given as the response', { responseId => undef },
        'Response not found'],
);

for my $case (@missing) {
    my ($name, $change, $message) = @$case;
    subtest "404 $name" => sub {
        my $b = valid();
        my $id = delete $change->{ts} // $ts;
        for my $k (keys %$change) {
            $b->{$k} = defined $change->{$k} ? $change->{$k}
                                             : $b->{requestId};
        }
        my $before = rows();
        my $r = post($id, $b);
        is($r->{status}, 404, 'status 404');
        is_deeply($r->{json}, { name => 'NotFound', message => $message },
                  $message);
        is(rows(), $before, 'nothing stored');
    };
}

# 409: a request or a response has at most one core log

{
    my $b = valid();
    my $r = post($ts, $b);
    is($r->{status}, 201, 'first core log for a request and response');

    my $before = rows();
    $r = post($ts, $b);
    is($r->{status}, 409, 'the same request and response again: 409');
    is($r->{json}{name}, 'Conflict', 'name Conflict');

    my ($rq, $rs) = $t->make_request_response($ts);
    $r = post($ts, { %$b, requestId => $rq });
    is($r->{status}, 409, 'a used response with a new request: 409');

    $r = post($ts, { %$b, responseId => $rs });
    is($r->{status}, 409, 'a used request with a new response: 409');
    is(rows(), $before, 'nothing stored by the conflicts');

    $r = post($ts, { %$b, requestId => $rq, responseId => $rs });
    is($r->{status}, 201, 'the new request and response are still free');
}

$t->done;
done_testing;
