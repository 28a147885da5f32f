#!/usr/bin/perl

# POST /v1/logtanks: identity from the token (X-Auth-Token), the 201 body
# and its request id, the provider's error shape on every error, 404s in
# the caller's project, the 409 race, isolation between projects, and the
# accepted resource types.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Corelog::Test;

my $t = Corelog::Test->new;
$t->write_shipped_conf(workers => 2);
$t->run;

my $acc = $t->make_account('acme');
my $tok = $t->make_token($acc, domain => 'dom-1', project => 'proj-a');
my $tok_b = $t->make_token($acc, domain => 'dom-1', project => 'proj-b');
my $tok_np = $t->make_token($acc, domain => 'dom-1');
my $tok_nd = $t->make_token($acc, project => 'proj-a');

my $g = $t->make_log_group($acc, 'proj-a');
my $st = $t->make_log_stream($g);
my $g2 = $t->make_log_group($acc, 'proj-a');
my $st2 = $t->make_log_stream($g2);
my $gb = $t->make_log_group($acc, 'proj-b');
my $stb = $t->make_log_stream($gb);

my $other = $t->make_account('other');
my $tok_o = $t->make_token($other, domain => 'dom-1', project => 'proj-a');

my $n = 0;

# the logtank object, and the request body that holds it
sub inner {
    my (%o) = @_;
    return { resource_type => 'LISTENER',
             resource_id => 'res-' . ++$n . "-$$",
             log_group_id => $g, log_stream_id => $st, %o };
}

sub tank { return { logtank => inner(@_) } }

sub post {
    my ($body, %h) = @_;
    return $t->http(POST => '/v1/logtanks',
        headers => { 'X-Auth-Token' => $tok,
                     'Content-Type' => 'application/json', %h },
        body => ref $body ? encode_json($body) : $body);
}

sub count {
    return $t->dbh->selectrow_array('SELECT count(*) FROM corelog.logtanks');
}

sub is_error {
    my ($r, $status, $re) = @_;
    is($r->{status}, $status, "status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON');
    is_deeply([sort keys %{ $r->{json} // {} }],
              [qw(error_code error_msg request_id)], 'the provider shape')
        or diag $r->{body};
    is($r->{json}{error_code}, sprintf('CLG.0%03d', $status), 'error_code');
    like($r->{json}{error_msg} // '', $re, 'error_msg');
    like($r->{json}{request_id} // '', qr/^[0-9a-f]{32}$/, 'request_id');
    is($r->{headers}{'x-request-id'}, $r->{json}{request_id},
       'X-Request-Id header') if $status != 400 || $r->{json}{request_id};
}

# 201

my $body = inner(resource_id => '78d425da-7d6c-4a50-9a77-ad8b46c1e2f0');
my $r = post({ logtank => { %$body, domain_id => 'evil', project_id => 'evil',
                            id => 'x', status => 'DOWN', x => 1 },
               domain_id => 'evil' });
is($r->{status}, 201, 'status 201');

my $j = $r->{json};
is_deeply([sort keys %$j], [qw(logtank request_id)], 'logtank and request_id');
my $lt = $j->{logtank};
is_deeply([sort keys %$lt],
          [sort qw(id domain_id project_id resource_type resource_id
                   log_group_id log_stream_id status created_at updated_at)],
          'every field of the logtank');
like($lt->{id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-7/, 'a new id');
is($lt->{domain_id}, 'dom-1', 'domain_id from the token, not the body');
is($lt->{project_id}, 'proj-a', 'project_id from the token, not the body');
is($lt->{resource_type}, 'LISTENER', 'resource_type');
is($lt->{resource_id}, $body->{resource_id}, 'resource_id');
is($lt->{log_group_id}, $g, 'log_group_id');
is($lt->{log_stream_id}, $st, 'log_stream_id');
is($lt->{status}, 'ACTIVE', 'status ACTIVE');
like($lt->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'created_at');
is($lt->{updated_at}, $lt->{created_at}, 'updated_at');
like($j->{request_id}, qr/^[0-9a-f]{32}$/, 'request_id');
is($r->{headers}{'x-request-id'}, $j->{request_id}, 'X-Request-Id header');

my $row = $t->dbh->selectrow_hashref(q{
    SELECT id::text, account_id::text, domain_id, project_id, resource_type,
           resource_id, log_group_id::text, log_stream_id::text, status,
           to_char(created_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at,
           to_char(updated_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS updated_at
      FROM corelog.logtanks WHERE id = $1}, undef, $lt->{id});
is_deeply($row, { %$lt, account_id => $acc }, 'the stored row');

isnt(post(tank())->{json}{request_id}, $j->{request_id},
     'request ids are unique per request');

subtest 'a token without a domain: domain_id null' => sub {
    my $r = post(tank(), 'X-Auth-Token' => $tok_nd);
    is($r->{status}, 201, 'status 201');
    ok(exists $r->{json}{logtank}{domain_id}
       && !defined $r->{json}{logtank}{domain_id}, 'domain_id null');
};

# errors: every one in the provider's shape

subtest '400: every invalid field named' => sub {
    my $before = count();
    my $r = post({ logtank => { resource_type => 'NOT VALID!',
                                resource_id => '', log_group_id => 'x' } });
    is_error($r, 400, qr/resource_type.*resource_id.*log_group_id.*log_stream_id/);
    is(count(), $before, 'nothing stored');
};

my @invalid = (
    ['no logtank object', { other => {} }, qr/logtank/],
    ['logtank an array', { logtank => [] }, qr/logtank/],
    ['resource_type missing', { logtank => inner(resource_type => undef) },
        qr/resource_type/],
    ['resource_type a number', { logtank => inner(resource_type => 5) },
        qr/resource_type/],
    ['resource_type 65 characters',
        { logtank => inner(resource_type => 'L' x 65) }, qr/resource_type/],
    ['resource_type with a space', { logtank => inner(resource_type => 'A B') },
        qr/resource_type/],
    ['resource_id empty', { logtank => inner(resource_id => '') },
        qr/resource_id/],
    ['resource_id 256 characters',
        { logtank => inner(resource_id => 'r' x 256) }, qr/resource_id/],
    ['resource_id an object', { logtank => inner(resource_id => {}) },
        qr/resource_id/],
    ['log_group_id not a UUID', { logtank => inner(log_group_id => 'g-1') },
        qr/log_group_id/],
    ['log_stream_id missing', { logtank => inner(log_stream_id => undef) },
        qr/log_stream_id/],
    ['malformed JSON', '{"logtank":', qr/Malformed JSON/],
    ['invalid UTF-8', qq({"logtank":{"resource_id":"\xff"}}), qr/UTF-8/],
);

for my $case (@invalid) {
    my ($name, $b, $re) = @$case;
    subtest "400: $name" => sub {
        if (ref $b && ref $b->{logtank} eq 'HASH') {
            delete $b->{logtank}{$_}
                for grep { !defined $b->{logtank}{$_} } keys %{$b->{logtank}};
        }
        my $before = count();
        is_error(post($b), 400, $re);
        is(count(), $before, 'nothing stored');
    };
}

subtest '401: no token, a bad token, a Bearer token' => sub {
    is_error(post(tank(), 'X-Auth-Token' => undef), 401, qr/X-Auth-Token/);
    is_error(post(tank(), 'X-Auth-Token' => 'clg_nope'), 401, qr/Invalid/);
    is_error(post(tank(), 'X-Auth-Token' => undef,
                  Authorization => "Bearer $tok"), 401, qr/X-Auth-Token/);
};

subtest '403: a token without a project' => sub {
    my $before = count();
    is_error(post(tank(), 'X-Auth-Token' => $tok_np), 403, qr/project/);
    is(count(), $before, 'nothing stored');
};

# 404: [name, changes, token, message]
my @missing = (
    ['an unknown log group', { log_group_id => Corelog::Test::uuid() },
        $tok, qr/Log group not found/],
    ["another project's log group", { log_group_id => $gb,
                                      log_stream_id => $stb },
        $tok, qr/Log group not found/],
    ["another account's project of the same name", {},
        $tok_o, qr/Log group not found/],
    ['an unknown log stream', { log_stream_id => Corelog::Test::uuid() },
        $tok, qr/Log stream not found/],
    ['a stream of another group', { log_stream_id => $st2 },
        $tok, qr/Log stream not found/],
);

for my $case (@missing) {
    my ($name, $change, $token, $re) = @$case;
    subtest "404: $name" => sub {
        my $before = count();
        is_error(post(tank(%$change), 'X-Auth-Token' => $token), 404, $re);
        is(count(), $before, 'nothing stored');
    };
}

subtest '405, 415, 413 in the provider shape' => sub {
    my $r = $t->http(GET => '/v1/logtanks',
                     headers => { 'X-Auth-Token' => $tok });
    is_error($r, 405, qr/./);
    is($r->{headers}{allow}, 'POST', 'Allow: POST');

    is_error(post(tank(), 'Content-Type' => 'text/plain'), 415, qr/json/i);

    is_error(post('{"logtank":{"resource_id":"' . ('r' x (1024 * 1024))
                  . '"}}'), 413, qr/./);
};

subtest '409: one logtank per resource in a project' => sub {
    my $b = inner();
    is(post({ logtank => $b })->{status}, 201, 'first: 201');
    my $before = count();
    is_error(post({ logtank => $b }), 409, qr/already has a logtank/);
    is_error(post({ logtank => { %$b, log_group_id => $g2,
                                 log_stream_id => $st2 } }), 409,
             qr/already/);
    is(count(), $before, 'nothing stored');

    my $r = post({ logtank => { %$b, resource_type => 'LOADBALANCER' } });
    is($r->{status}, 201, 'another type of resource with the same id: 201');

    $r = post({ logtank => { %$b, log_group_id => $gb,
                             log_stream_id => $stb } },
              'X-Auth-Token' => $tok_b);
    is($r->{status}, 201, 'the same resource in another project: 201');
};

subtest 'the 409 race: 40 concurrent creates for one resource' => sub {
    my $b = encode_json(tank());
    my @reqs = map { [POST => '/v1/logtanks',
                      headers => { 'X-Auth-Token' => $tok,
                                   'Content-Type' => 'application/json' },
                      body => $b] } 1 .. 40;
    my $res = $t->http_many(\@reqs, timeout => 60);
    my %st;
    $st{$_->{status}}++ for @$res;
    is_deeply(\%st, { 201 => 1, 409 => 39 }, 'one 201, 39 × 409')
        or diag explain \%st;
    my %ids = map { $_->{json}{request_id} => 1 } @$res;
    is(scalar keys %ids, 40, '40 distinct request ids');
};

subtest 'isolation between projects' => sub {
    my $r = post(tank(), 'X-Auth-Token' => $tok_b);
    is($r->{status}, 404, "project b cannot use project a's group");
    $r = post(tank(log_group_id => $gb, log_stream_id => $stb),
              'X-Auth-Token' => $tok_b);
    is($r->{status}, 201, 'but its own');
    is($r->{json}{logtank}{project_id}, 'proj-b', 'in project b');
};

$t->stop;

# corelog_logtank_resource_types restricts the accepted set

$t->write_conf(<<'EOF2');
    log_format ids '$status $request_id $early';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/ids.log ids;
        uninitialized_variable_warn off;

        location = /v1/logtanks {
            corelog_auth_request /_auth;
            corelog_api logtank;
            corelog_logtank_resource_types LISTENER LOADBALANCER;
        }

        # $request_id made by nginx before the module needs it
        location = /early/v1/logtanks {
            set $early $request_id;
            corelog_auth_request /_auth;
            corelog_api logtank;
        }

        location = /_auth {
            internal;
            corelog_token_check x-auth-token;
        }
    }
EOF2
$t->run;

is(post(tank(resource_type => 'LISTENER'))->{status}, 201,
   'an accepted type: 201');
is(post(tank(resource_type => 'LOADBALANCER'))->{status}, 201,
   'the other accepted type: 201');
my $bucket = post(tank(resource_type => 'BUCKET'));
is_error($bucket, 400, qr/resource_type/);
is_error(post(tank(resource_type => 'LISTEN')), 400, qr/resource_type/);
is_error(post(tank(resource_type => 'LISTENERS')), 400, qr/resource_type/);

# the request id is the access log's $request_id: the module's own (made
# from the worker's random pool), or nginx's when something asked for it
# first

$r = post(tank());
my $early = $t->http(POST => '/early/v1/logtanks',
    headers => { 'X-Auth-Token' => $tok,
                 'Content-Type' => 'application/json' },
    body => encode_json(tank()));
is($early->{status}, 201, 'a 201 where $request_id was made first');

# more ids than one fill of a worker's pool (1024 bytes, 64 ids): 400s,
# each with its own id
my @many = map { post('{"logtank": 1}') } 1 .. 150;
is(scalar(grep { $_->{status} == 400 } @many), 150, '150 × 400');
my %seen;
$seen{$_->{json}{request_id} // ''}++ for @many;
is(scalar(grep { /^[0-9a-f]{32}$/ } keys %seen), 150,
   '150 distinct request ids of 32 hex digits');
$t->stop;
open my $fh, '<', $t->dir . '/ids.log' or die "ids.log: $!";
my $log = join '', <$fh>;
like($log, qr/^201 \Q$r->{json}{request_id}\E \S*$/m,
     'a 201: its request_id is in the access log');
like($log, qr/^400 \Q$bucket->{json}{request_id}\E \S*$/m,
     'a 400: its request_id is in the access log');
my $eid = $early->{json}{request_id} // 'none';
like($log, qr/^201 \Q$eid\E \Q$eid\E$/m,
     '$request_id made before the module: the answer has that one');
is(scalar(grep { $log =~ /^400 \Q$_\E \S*$/m } keys %seen), 150,
   'the 150 ids are in the access log');

$t->done;
done_testing;
