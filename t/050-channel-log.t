#!/usr/bin/perl

# POST /api/v1/log/create: 202 {} once committed, every field rule, tags
# and custom_references as stored, 404 for a channel that is not the
# caller's, alerts as NOTIFY corelog_alert, 200 concurrent posts.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Time::HiRes qw(sleep time);
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc);
my $ch = $t->make_channel($acc, 'payments');
my $other = $t->make_account('other');
my $other_ch = $t->make_channel($other, 'theirs');

my $json = JSON::PP->new->canonical;

sub post {
    my ($body, %h) = @_;
    return $t->http(POST => '/api/v1/log/create',
        headers => { Authorization => "Bearer $tok",
                     'Content-Type' => 'application/json', %h },
        body => ref $body ? encode_json($body) : $body);
}

sub count {
    return $t->dbh->selectrow_array(
        'SELECT count(*) FROM corelog.channel_logs');
}

sub last_row {
    return $t->dbh->selectrow_hashref(q{
        SELECT channel_id::text, reference, label, body, type, alert,
               array_to_json(tags)::text AS tags,
               custom_references::text AS custom_references,
               created_at > now() - interval '1 minute' AS recent
          FROM corelog.channel_logs ORDER BY id DESC LIMIT 1});
}

# the answer and the stored row

subtest 'every field: 202 {} and the stored row' => sub {
    my $r = post({ channel_id => uc $ch, reference => 'user-1',
                   label => 'Signed in', body => "line 1\nline 2",
                   type => 'success', alert => JSON::PP::false,
                   tags => 'auth, web', custom_references => { a => 'b' },
                   id => 'ignored', unknown => [1] });
    is($r->{status}, 202, 'status 202');
    is($r->{body}, '{}', 'body {}');
    like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');
    is_deeply(last_row(), {
        channel_id => $ch, reference => 'user-1', label => 'Signed in',
        body => "line 1\nline 2", type => 'success', alert => 0,
        tags => '["auth","web"]', custom_references => '{"a": "b"}',
        recent => 1 }, 'stored');
};

subtest 'defaults: type information, alert false, no tags' => sub {
    my $r = post({ channel_id => $ch, body => 'just a body' });
    is($r->{status}, 202, 'status 202');
    is_deeply(last_row(), {
        channel_id => $ch, reference => undef, label => undef,
        body => 'just a body', type => 'information', alert => 0,
        tags => '[]', custom_references => undef, recent => 1 },
        'stored with defaults');
};

for my $type (qw(page_view action success error information)) {
    subtest "type $type" => sub {
        is(post({ channel_id => $ch, label => 'x', type => $type })
               ->{status}, 202, 'status 202');
        is(last_row()->{type}, $type, 'stored');
    };
}

subtest 'bounds are inclusive' => sub {
    my $r = post({ channel_id => $ch, label => "\x{e9}" x 255,
                   reference => 'r' x 255, body => 'b' x 65536 });
    is($r->{status}, 202, 'status 202');
    my $row = last_row();
    is(length $row->{label}, 255, '255-character label');
    is(length $row->{body}, 65536, '64 KiB body');
};

# tags: [name, input, stored]

my @tags = (
    ['comma-delimited, trimmed, empty and duplicate items dropped',
        ' a, b,,a , c ,', '["a","b","c"]'],
    ['one tag', 'solo', '["solo"]'],
    ['only separators', ' , ,', '[]'],
    ['an empty string', '', '[]'],
    ['an array, trimmed and deduplicated', [' x', 'y', 'x ', '', 'z'],
        '["x","y","z"]'],
    ['an empty array', [], '[]'],
    ['case is kept, so A and a are two tags', 'A,a', '["A","a"]'],
    ['quotes, backslashes and braces', ['say "hi"', 'back\\slash', '{x}'],
        '["say \"hi\"","back\\\\slash","{x}"]'],
    ['32 tags', join(',', map { "t$_" } 1 .. 32),
        encode_json([map { "t$_" } 1 .. 32])],
    ['duplicates do not count against the bound',
        join(',', (map { "t$_" } 1 .. 32), 't1', 't2'),
        encode_json([map { "t$_" } 1 .. 32])],
    ['a 64-character tag', 'x' x 64, encode_json(['x' x 64])],
);

for my $case (@tags) {
    my ($name, $in, $stored) = @$case;
    subtest "tags: $name" => sub {
        my $r = post({ channel_id => $ch, label => 'l', tags => $in });
        is($r->{status}, 202, 'status 202');
        is(last_row()->{tags}, $stored, 'stored as text[]');
    };
}

# custom_references: [name, input, stored jsonb]

my @refs = (
    ['an object', { order => 'o-1', amount => 12, vip => JSON::PP::true },
        { order => 'o-1', amount => 12, vip => JSON::PP::true }],
    ['an array of objects', [{ order => 'o-1' }, { amount => 1.5 },
                             { vip => JSON::PP::false, x => 'y' }],
        { order => 'o-1', amount => 1.5, vip => JSON::PP::false,
          x => 'y' }],
    ['an empty object', {}, {}],
    ['an empty array', [], {}],
    ['a fraction kept exactly', { f => 0.1 }, { f => 0.1 }],
    ['32 references', { map { ("r$_" => $_) } 1 .. 32 },
        { map { ("r$_" => $_) } 1 .. 32 }],
);

for my $case (@refs) {
    my ($name, $in, $stored) = @$case;
    subtest "custom_references: $name" => sub {
        my $r = post({ channel_id => $ch, label => 'l',
                       custom_references => $in });
        is($r->{status}, 202, 'status 202');
        is_deeply($json->decode(last_row()->{custom_references}), $stored,
                  'stored as one jsonb object');
    };
}

# 400: [name, body changes, field]

my @invalid = (
    ['channel_id missing', { channel_id => undef }, 'channel_id'],
    ['channel_id a number', { channel_id => 5 }, 'channel_id'],
    ['channel_id not a UUID', { channel_id => 'payments' }, 'channel_id'],
    ['reference a number', { reference => 5 }, 'reference'],
    ['reference 256 characters', { reference => 'r' x 256 }, 'reference'],
    ['label an object', { label => {} }, 'label'],
    ['label 256 characters', { label => 'l' x 256 }, 'label'],
    ['body over 64 KiB', { body => 'b' x 65537 }, 'body'],
    ['body an array', { body => ['x'] }, 'body'],
    ['neither label nor body', { label => undef }, 'label'],
    ['label and body empty', { label => '', body => '' }, 'label'],
    ['type unknown', { type => 'warning' }, 'type'],
    ['type upper case', { type => 'ERROR' }, 'type'],
    ['type empty', { type => '' }, 'type'],
    ['type a number', { type => 1 }, 'type'],
    ['alert a string', { alert => 'true' }, 'alert'],
    ['alert a number', { alert => 1 }, 'alert'],
    ['tags a number', { tags => 5 }, 'tags'],
    ['tags an object', { tags => { a => 1 } }, 'tags'],
    ['tags with a number in the array', { tags => ['a', 1] }, 'tags'],
    ['33 tags', { tags => join(',', map { "t$_" } 1 .. 33) }, 'tags'],
    ['a 65-character tag', { tags => 'x' x 65 }, 'tags'],
    ['too many tag items', { tags => ',' x 300 }, 'tags'],
    ['custom_references a string', { custom_references => 'a=b' },
        'custom_references'],
    ['custom_references an array of strings',
        { custom_references => ['a'] }, 'custom_references'],
    ['a nested object as a value',
        { custom_references => { a => { b => 1 } } }, 'custom_references'],
    ['a nested array as a value',
        { custom_references => [{ a => [1] }] }, 'custom_references'],
    ['a null value', { custom_references => { a => undef } },
        'custom_references'],
    ['a duplicate name across the array',
        { custom_references => [{ a => 1 }, { a => 2 }] },
        'custom_references'],
    ['an empty name', { custom_references => { '' => 1 } },
        'custom_references'],
    ['33 references',
        { custom_references => { map { ("r$_" => $_) } 1 .. 33 } },
        'custom_references'],
    ['a 256-character value', { custom_references => { a => 'v' x 256 } },
        'custom_references'],
);

for my $case (@invalid) {
    my ($name, $change, $field) = @$case;
    subtest "400: $name" => sub {
        my $b = { channel_id => $ch, label => 'l', %$change };
        delete $b->{$_} for grep { !defined $change->{$_}
                                   && exists $change->{$_} } keys %$change;
        my $before = count();
        my $r = post($b);
        is($r->{status}, 400, 'status 400');
        is($r->{json}{name}, 'BadRequest', 'name BadRequest');
        ok(exists $r->{json}{fieldErrors}{$field}, "fieldErrors names $field")
            or diag explain $r->{json};
        is(count(), $before, 'nothing stored');
    };
}

for my $case (['malformed JSON', '{"channel_id":'], ['an array', '[]'],
              ['invalid UTF-8', qq({"channel_id":"\xff"})],
              ['\\u0000', '{"label":"a\u0000"}'])
{
    subtest "400: $case->[0]" => sub {
        my $r = post($case->[1]);
        is($r->{status}, 400, 'status 400');
        is($r->{json}{name}, 'BadRequest', 'name BadRequest');
    };
}

# 404

for my $case (['an unknown channel', Corelog::Test::uuid()],
              ["another account's channel", $other_ch])
{
    subtest "404: $case->[0]" => sub {
        my $before = count();
        my $r = post({ channel_id => $case->[1], label => 'l',
                       alert => JSON::PP::true });
        is($r->{status}, 404, 'status 404');
        is_deeply($r->{json}, { name => 'NotFound',
                                message => 'Channel not found' }, 'message');
        is(count(), $before, 'nothing stored');
    };
}

# the route's other answers

subtest 'auth, method and media type' => sub {
    my $r = post({ channel_id => $ch, label => 'l' },
                 Authorization => 'Bearer nope');
    is($r->{status}, 401, 'a bad token: 401');
    like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
         'WWW-Authenticate: Bearer');

    $r = $t->http(GET => '/api/v1/log/create');
    is($r->{status}, 405, 'GET: 405');
    is($r->{headers}{allow}, 'POST', 'Allow: POST');

    $r = post('{}', 'Content-Type' => 'text/plain');
    is($r->{status}, 415, 'text/plain: 415');

    $r = post('{"body":"' . ('b' x (1024 * 1024)) . '"}');
    is($r->{status}, 413, 'over client_max_body_size: 413');
    is($r->{json}{name}, 'PayloadTooLarge', 'JSON');
};

# alerts: NOTIFY corelog_alert in the insert's transaction

subtest 'alerts' => sub {
    my $listen = DBI->connect($t->_dsn('corelog'), 'postgres', '',
                              { AutoCommit => 1, RaiseError => 1,
                                pg_enable_utf8 => 1 });
    $listen->do('LISTEN corelog_alert');

    my $collect = sub {
        my ($secs) = @_;
        my @got;
        my $deadline = time + $secs;
        while (time < $deadline) {
            while (my $n = $listen->pg_notifies) {
                push @got, $n;
            }
            sleep 0.05;
        }
        return @got;
    };

    is(post({ channel_id => $ch, label => 'quiet', alert => JSON::PP::false,
              reference => 'r0' })->{status}, 202, 'alert false: 202');
    is(post({ channel_id => $ch, body => 'no alert field' })->{status}, 202,
       'no alert field: 202');
    is(post({ channel_id => $other_ch, label => 'l',
              alert => JSON::PP::true })->{status}, 404,
       'alert on a channel not found: 404');
    is(scalar($collect->(0.5)), 0, 'no notification for those');

    my $r = post({ channel_id => $ch, label => 'Payment failed',
                   reference => 'order-9', type => 'error',
                   body => 'x' x 60000, alert => JSON::PP::true });
    is($r->{status}, 202, 'alert true: 202');

    my @got = $collect->(1);
    is(scalar @got, 1, 'exactly one notification');
    is($got[0][0], 'corelog_alert', 'on channel corelog_alert');

    my $p = $json->decode($got[0][2]);
    my ($id) = $t->dbh->selectrow_array(
        q{SELECT id::text FROM corelog.channel_logs
           WHERE label = 'Payment failed'});
    is($p->{id}, $id, 'payload: the log id');
    is($p->{channel_id}, $ch, 'payload: the channel id');
    is($p->{type}, 'error', 'payload: type');
    is($p->{label}, 'Payment failed', 'payload: label');
    is($p->{reference}, 'order-9', 'payload: reference');
    like($p->{created_at}, qr/Z$/, 'payload: created_at');
    cmp_ok(length $got[0][2], '<', 8000, 'payload under 8000 bytes');

    $r = post({ channel_id => $ch, label => "\x{1F600}" x 255,
                reference => "\"\\" x 127, alert => JSON::PP::true });
    is($r->{status}, 202, 'an alert with the longest label and reference');
    @got = $collect->(1);
    is(scalar @got, 1, 'one notification');
    is($json->decode($got[0][2])->{label}, "\x{1F600}" x 255,
       'the label whole');

    # 20 concurrent alerts: 20 notifications
    my @reqs = map { [POST => '/api/v1/log/create',
                      headers => { Authorization => "Bearer $tok",
                                   'Content-Type' => 'application/json' },
                      body => encode_json({ channel_id => $ch,
                                            label => "burst $_",
                                            alert => JSON::PP::true })] }
               1 .. 20;
    my $res = $t->http_many(\@reqs);
    is(scalar(grep { $_->{status} == 202 } @$res), 20, '20 × 202');
    @got = $collect->(1.5);
    is(scalar @got, 20, '20 notifications, one per alerted log');
    is_deeply([sort map { $json->decode($_->[2])->{label} } @got],
              [sort map { "burst $_" } 1 .. 20], 'one for each');

    $listen->disconnect;
};

# 200 concurrent posts to one channel

subtest '200 concurrent posts' => sub {
    my $before = count();
    my @reqs = map { [POST => '/api/v1/log/create',
                      headers => { Authorization => "Bearer $tok",
                                   'Content-Type' => 'application/json' },
                      body => encode_json({ channel_id => $ch,
                                            label => "concurrent $_",
                                            tags => "n$_" })] } 1 .. 200;
    my $res = $t->http_many(\@reqs, timeout => 60);
    is(scalar(grep { $_->{status} == 202 } @$res), 200, '200 × 202');
    is(count() - $before, 200, '200 rows');
    my ($distinct) = $t->dbh->selectrow_array(q{
        SELECT count(DISTINCT label) FROM corelog.channel_logs
         WHERE label LIKE 'concurrent %'});
    is($distinct, 200, 'each its own row');
};

$t->done;
done_testing;
