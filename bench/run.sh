#!/bin/bash
# make bench: the three routes against a private, durable PostgreSQL
# (fsync and synchronous_commit on) and nginx with the module
# (worker_processes auto), with wrk at 64 connections; in the same run the
# HTTP ceiling (nginx answering `return 201` to the same POST), the
# single-row database ceiling (pgbench, one INSERT per transaction, 32
# clients) and the bulk database ceiling (pgbench, 1000 rows per
# transaction into each route's tables), and each route's fraction of the
# combined limit 1 / (1/http + 1/bulk); one table of figures at the end.
# Then the channel route with the status zone on (the shipped
# configuration) and off (without corelog_status_zone and the server of
# corelog_status): two nginx side by side, the load alternating on, off,
# on, off... (BENCH_STATUS_PAIRS pairs), and the difference per pair;
# BENCH_STATUS_ONLY=1 (make bench-status) runs only that, BENCH_NO_STATUS=1
# skips it.  What it shares with bench/ab.sh (make bench-ab) is in
# bench/lib.sh.
#
#   BENCH_DURATION=10s BENCH_WARMUP=3s BENCH_CONNECTIONS=64 make bench

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/bench/out
duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-3s}
conns=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
pgclients=${BENCH_PG_CLIENTS:-32}
port=${BENCH_PORT:-18480}
status_port=${BENCH_STATUS_PORT:-$((port + 1))}
# the API port of the nginx without the status zone (make bench's last
# section runs it next to the one with the zone)
off_port=${BENCH_OFF_PORT:-$((port + 2))}
pgport=${BENCH_PGPORT:-18432}
status_only=${BENCH_STATUS_ONLY:-}
# request/response pairs for the core-log route (not run by
# BENCH_STATUS_ONLY=1)
pairs=${BENCH_PAIRS:-$([ -n "$status_only" ] && echo 1000 || echo 1500000)}
# the status zone's A/B: on/off pairs, and each run's length
status_pairs=${BENCH_STATUS_PAIRS:-10}
status_duration=${BENCH_STATUS_DURATION:-4s}
status_warmup=${BENCH_STATUS_WARMUP:-1s}
# the bulk database ceiling: pgbench clients and the length of each run
bulk_clients=${BENCH_BULK_CLIENTS:-4}
bulk_duration=${BENCH_BULK_DURATION:-5s}
module=$top/objs/ngx_http_corelog_module.so

# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"

[ -f "$module" ] || die "build the module first (make build)"

# BENCH_KEEP=1 leaves PostgreSQL and nginx running after the run (to
# profile by hand)
cleanup() { [ -n "${BENCH_KEEP:-}" ] || stop; }
trap cleanup EXIT

stop
fresh_out
pg_setup
conninfo=$(db_conninfo corelog)
db_create corelog "$top"

echo "bench: seeding $pairs request/response pairs..."
db_seed "$conninfo" "$pairs"
[ -n "${BENCH_SQL:-}" ] && psql -d "$conninfo" -c "$BENCH_SQL"

# nginx: the shipped configuration (bench/lib.sh's write_conf), and for the
# status zone's A/B the same with the zone on and off
write_conf on nginx "$port" "$out/error.log"
write_conf on nginx-on "$port" "$out/error-status.log"
write_conf off nginx-off "$off_port" "$out/error-status.log"
grep -Eq '^\s*corelog_status_zone\s' "$out/nginx-on.conf" ||
    die "conf/nginx.conf has no corelog_status_zone: nothing to turn off"
if grep -Eq '^\s*corelog_status(_zone)?\s*[ ;]' "$out/nginx-off.conf"; then
    die "could not remove the status zone from conf/nginx.conf"
fi
for c in nginx nginx-on nginx-off; do
    check_conf "$c" conf/nginx.conf
done

[ -n "$status_only" ] || nginx_start nginx "$out/" "$out/error.log"

export BENCH_TS=$ts BENCH_CP=$cp BENCH_CHANNEL=$ch BENCH_GROUP=$grp \
       BENCH_STREAM=$stream BENCH_TOKEN=$token BENCH_THREADS=$threads

url=http://127.0.0.1:$port
# for running wrk by hand against a kept bench (BENCH_KEEP=1)
declare -p BENCH_TS BENCH_CP BENCH_CHANNEL BENCH_GROUP BENCH_STREAM \
    BENCH_TOKEN BENCH_THREADS >"$out/env"

# where run and cpu_per_request append their figures (the status zone's
# A/B runs: $out/status)
rdir=$out

: >"$out/results"
: >"$out/cpu"
: >"$out/batches"
: >"$out/rss"

routes=" ${BENCH_ROUTES:-ceiling core_log channel_log logtank} "
[ -n "$status_only" ] && routes=" "
case $routes in *" ceiling "*) echo "bench: HTTP ceiling..."
                               run ceiling ceiling.lua ;; esac
case $routes in *" core_log "*) echo "bench: POST /core-log..."
                                run core_log corelog.lua ;; esac
case $routes in *" channel_log "*) echo "bench: POST /api/v1/log/create..."
                                   run channel_log channel.lua ;; esac
case $routes in *" logtank "*) echo "bench: POST /v1/logtanks..."
                               run logtank logtank.lua ;; esac

# the cost of the largest bodies: the largest a route accepts (a channel
# log with every field at its limit, 175 KB, stored whole) and the costliest
# it refuses (the same, padded to the body limit with fields it ignores,
# with a channel_id that is not a UUID: parsed whole, then 400), and two
# that the bounds refuse before jansson sees them; 16 connections, 5 s each
# (BENCH_BODY_DURATION), one body again and again
if [ -z "${BENCH_NO_BODIES:-}" ] && [ "${BENCH_ROUTES:-}" = "" ] &&
   [ -z "$status_only" ]; then
    limit=$(sed -n 's/^ *client_max_body_size \([0-9]*\)k;.*/\1/p' \
            "$top/conf/nginx.conf")
    CH=$ch LIMIT=$((limit * 1024)) OUT=$out perl -I "$top/t/lib" \
        -MCorelog::Bodies -e '
        my ($ch, $limit, $out) = @ENV{qw(CH LIMIT OUT)};
        my %b;
        $b{accepted} = Corelog::Bodies::channel_max($ch);
        ($b{rejected} = Corelog::Bodies::pad($b{accepted}, $limit - 64))
            =~ s/"channel_id":"[^"]*"/"channel_id":"not-a-uuid"/ or die;
        $b{values} = "{\"a\":[" . join(",", (0) x ($limit / 2 - 8)) . "]}";
        $b{malformed} = Corelog::Bodies::pad("{\"a\":1}", $limit - 64);
        $b{malformed} =~ s/\}$/,}/;
        for (keys %b) {
            open my $fh, ">", "$out/body-$_.json" or die;
            print $fh $b{$_};
        }'
    for b in accepted rejected values malformed; do
        echo "bench: body $b ($(stat -c %s "$out/body-$b.json") bytes)..."
        BENCH_BODY_FILE=$out/body-$b.json run "body:$b" body.lua 16 \
            "${BENCH_BODY_DURATION:-5s}"
    done
fi

# the single-row database ceiling: pgbench, one INSERT per transaction
cat >"$out/pgbench-channel.sql" <<EOS
INSERT INTO corelog.channel_logs (id, channel_id, label, type, tags,
                                  custom_references, created_at)
VALUES (gen_random_uuid(), '$ch', 'checkout', 'action', '{bench,web}',
        '{"order":"o-1"}', now());
EOS
cat >"$out/pgbench-core.sql" <<EOS
INSERT INTO corelog.core_logs (id, traffic_source_id, core_pathname_id,
                               request_id, response_id, status, method,
                               level, elapsed_time, created_at)
VALUES (gen_random_uuid(), '$ts', '$cp',
        '00000000-0000-4000-8000-000000000001',
        '00000000-0000-4000-9000-000000000001', 200, 'GET', 'info', 1.5,
        now());
EOS
cat >"$out/pgbench-logtank.sql" <<EOS
INSERT INTO corelog.logtanks (id, account_id, domain_id, project_id,
                              resource_type, resource_id, log_group_id,
                              log_stream_id, created_at, updated_at)
VALUES (gen_random_uuid(), '$acc', 'bench', 'bench', 'LISTENER',
        gen_random_uuid()::text, '$grp', '$stream', now(), now());
EOS

pgb() {
    local name=$1 file=$2
    echo "bench: pgbench $name..."
    local before after tps
    before=$(cpu_sample)
    pgbench -n -M prepared -c "$pgclients" -j 2 -T "${duration%s}" \
        -f "$file" "$conninfo" >"$out/pgbench-$name.txt" 2>&1
    after=$(cpu_sample)
    tps=$(awk '/^tps/ {print $3; exit}' "$out/pgbench-$name.txt")
    echo "$name $tps" >>"$out/pgbench"
    cpu_per_request "pgbench:$name" "$tps" "$before" "$after"
}

: >"$out/pgbench"
if [ -z "${BENCH_NO_PGBENCH:-}" ] && [ -z "$status_only" ]; then
    pgb core_log "$out/pgbench-core.sql"
    pgb channel_log "$out/pgbench-channel.sql"
    pgb logtank "$out/pgbench-logtank.sql"
fi

# The bulk database ceiling (issue 15): pgbench inserting 1000 rows per
# transaction (INSERT ... SELECT FROM generate_series) into each route's
# table, with every constraint, index and key the table has, and valid
# foreign keys to the seeded parents: the most rows per second PostgreSQL
# can take on these cores when per-statement costs (the commit's flush,
# executor start-up, the round trip) are spread over 1000 rows.  A core
# log is two rows, as the route writes them: its claim (one seeded
# request/response pair per row, numbered from a sequence) and the log.
# BENCH_BULK_CLIENTS transactions at a time (default 4), each route for
# BENCH_BULK_DURATION (default 5s), its tables emptied and checkpointed
# first (the routes' rows are gone by then: their runs are over).
# $out/bulk: "route rows/s", "-" when pgbench failed.
cat >"$out/bulk-core_log.sql" <<EOS
WITH b AS MATERIALIZED (SELECT (nextval('bench_bulk') - 1) * 1000 AS base),
     n AS (SELECT base + i AS n, i FROM b, generate_series(1, 1000) i),
     c AS (INSERT INTO corelog.core_log_claims (request_id, response_id,
                                                core_log_id)
           SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                  ('00000000-0000-4000-9000-' || lpad(to_hex(n), 12, '0'))::uuid,
                  gen_random_uuid()
             FROM n
           RETURNING request_id, response_id, core_log_id)
INSERT INTO corelog.core_logs (id, traffic_source_id, core_pathname_id,
                               request_id, response_id, status, method,
                               level, elapsed_time, created_at)
SELECT core_log_id, '$ts', '$cp', request_id, response_id, 200, 'GET',
       'info', 1.5, clock_timestamp()
  FROM c;
EOS
cat >"$out/bulk-channel_log.sql" <<EOS
INSERT INTO corelog.channel_logs (id, channel_id, reference, label, type,
                                  tags, custom_references, created_at)
SELECT gen_random_uuid(), '$ch', 'user-' || i % 997, 'checkout bulk-' || i,
       'action', '{bench,web}',
       ('{"order":"o-' || i || '","amount":' || i % 500 || '}')::jsonb,
       clock_timestamp()
  FROM generate_series(1, 1000) i;
EOS
cat >"$out/bulk-logtank.sql" <<EOS
WITH b AS MATERIALIZED (SELECT (nextval('bench_bulk') - 1) * 1000 AS base)
INSERT INTO corelog.logtanks (id, account_id, domain_id, project_id,
                              resource_type, resource_id, log_group_id,
                              log_stream_id, status, created_at, updated_at)
SELECT gen_random_uuid(), '$acc', 'bench', 'bench', 'LISTENER',
       'res-bulk-' || (base + i), '$grp', '$stream', 'ACTIVE', now(), now()
  FROM b, generate_series(1, 1000) i;
EOS

bulk() {
    local name=$1 log=$out/pgbench-bulk-$1.txt
    echo "bench: bulk ceiling $name..."
    empty_tables "$conninfo" "$name"
    psql -d "$conninfo" -c 'ALTER SEQUENCE bench_bulk RESTART'
    local before after tps rows rc=0
    before=$(cpu_sample)
    pgbench -n -M prepared -c "$bulk_clients" \
        -j "$((bulk_clients < 2 ? 1 : 2))" -T "${bulk_duration%s}" \
        -f "$out/bulk-$name.sql" "$conninfo" >"$log" 2>&1 || rc=$?
    after=$(cpu_sample)
    tps=$(awk '/^tps/ {print $3; exit}' "$log")
    if [ "$rc" != 0 ] || [ -z "$tps" ]; then
        echo "bench: bulk $name: pgbench failed ($log):" >&2
        grep -m 3 -E 'ERROR|aborted' "$log" >&2 || true
        echo "$name -" >>"$out/bulk"
        return 0
    fi
    rows=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 1000 }')
    echo "$name $rows" >>"$out/bulk"
    cpu_per_request "bulk:$name" "$rows" "$before" "$after"
}

: >"$out/bulk"
if [ -z "${BENCH_NO_PGBENCH:-}" ] && [ -z "$status_only" ]; then
    psql -d "$conninfo" -c 'CREATE SEQUENCE bench_bulk'
    bulk core_log
    bulk channel_log
    bulk logtank
fi

rss=""
for w in $workers; do
    rss="$rss $(awk '/VmHWM/ {print $2}' "/proc/$w/status" 2>/dev/null)kB"
done

# stop nginx: each worker logs how many rows its statements carried
[ -n "$status_only" ] || nginx_stop nginx

# The status zone's cost (issue 14): the channel route with the shipped
# configuration (zone on) and without the zone (off), alternating on, off,
# on, off...  Both nginx run side by side from the start (on: $port, its
# status on $status_port; off: $off_port), each with its own prefix
# (access.log) and its PostgreSQL connections, and only one gets load at a
# time: the pairs can be short and many, close in time, without restarts.
# Before each run the channel_logs table is emptied and checkpointed, so
# that every run starts from the same state (no table growth or checkpoint
# favours one side).  Their error log is error-status.log.  At the end, the
# zone's count of channel-log answers is read from the status server.
status_runs=
if [ -n "$status_only" ] ||
   { [ -z "${BENCH_NO_STATUS:-}" ] && [ -z "${BENCH_ROUTES:-}" ]; }; then
    status_runs=1
fi
sdir=$out/status
if [ -n "$status_runs" ]; then
    rdir=$sdir
    mkdir -p "$sdir"
    for f in results cpu batches rss; do : >"$sdir/$f"; done
    nginx_start nginx-on "$out/on/" "$out/error-status.log"
    workers_on=$workers
    nginx_start nginx-off "$out/off/" "$out/error-status.log"
    workers_off=$workers
    for i in $(seq "$status_pairs"); do
        for zone in on off; do
            echo "bench: status zone $zone, pair $i of $status_pairs..."
            empty_tables "$conninfo" channel_log
            if [ "$zone" = on ]; then
                workers=$workers_on url=http://127.0.0.1:$port
            else
                workers=$workers_off url=http://127.0.0.1:$off_port
            fi
            run "$zone-$i" channel.lua "$conns" "$status_duration" \
                "$status_warmup"
        done
    done
    counted=$(curl -sS "http://127.0.0.1:$status_port/status?format=prometheus" |
              awk '/^corelog_requests_total\{route="channel_log",/ {
                       c += $NF } END { print c + 0 }') || counted=unread
    sent=$(cat "$sdir"/wrk-on-*.txt |
           awk '/ requests in / { n += $1 } END { print n + 0 }')
    nginx_stop nginx-on
    nginx_stop nginx-off
    rdir=$out
    url=http://127.0.0.1:$port
fi

# status_report: the on/off runs, the difference per pair and its spread
status_report() {
    echo
    echo "status zone: on vs off, POST /api/v1/log/create ($status_pairs pairs alternating on, off;" \
         "wrk -t$threads -c$conns -d$status_duration after $status_warmup of warm-up;" \
         "channel_logs emptied and checkpointed before each run)"
    echo "server CPU = nginx + PostgreSQL, core-µs per request; diff = (on - off) / off, per pair;"
    echo "others: cores busy with anything else during the run (wrk, the kernel, other processes):"
    SDIR=$sdir perl -I"$top/bench" -e '
        require "pairs.pl";
        my $run = read_runs($ENV{SDIR});
        my (%rps, %cpu);
        for (keys %$run) {
            $rps{$_} = $run->{$_}{rps};
            $cpu{$_} = [@{$run->{$_}}{qw(nginx pg others)}];
        }
        my (%col, @dcpu, @dnginx, @dshare, @drps);
        printf "  %-6s %9s %9s %8s   %-18s %-18s %8s %8s %15s\n", "pair",
               "req/s on", "off", "diff", "cpu on (nginx+pg)",
               "cpu off (nginx+pg)", "diff", "nginx", "others on/off";
        for (my $i = 1; exists $rps{"on-$i"} && exists $rps{"off-$i"}; $i++) {
            my ($ron, $roff) = ($rps{"on-$i"}, $rps{"off-$i"});
            my ($non, $pon, $oon) = @{$cpu{"on-$i"}};
            my ($noff, $poff, $ooff) = @{$cpu{"off-$i"}};
            my ($son, $soff) = ($non + $pon, $noff + $poff);
            push @drps, pct($ron, $roff);
            push @dcpu, pct($son, $soff);
            push @dnginx, pct($non, $noff);
            push @dshare, ($non - $noff) * 100 / $soff;
            push @{$col{$_->[0]}}, $_->[1]
                for [ron => $ron], [roff => $roff], [son => $son],
                    [soff => $soff], [non => $non], [noff => $noff],
                    [pon => $pon], [poff => $poff];
            printf "  %-6s %9.0f %9.0f %+7.1f%%   %-18s %-18s %+7.1f%% %+7.1f%% %15s\n",
                $i, $ron, $roff, $drps[-1],
                sprintf("%.1f (%.1f+%.1f)", $son, $non, $pon),
                sprintf("%.1f (%.1f+%.1f)", $soff, $noff, $poff),
                $dcpu[-1], $dnginx[-1],
                sprintf("%.2f/%.2f", $oon * $ron / 1e6, $ooff * $roff / 1e6);
        }
        die "no complete pair\n" unless @dcpu;
        my %m = map { $_ => median(@{$col{$_}}) } keys %col;
        printf "  %-6s %9.0f %9.0f %8s   %-18s %-18s\n", "median",
            $m{ron}, $m{roff}, "",
            sprintf("%.1f (%.1f+%.1f)", $m{son}, $m{non}, $m{pon}),
            sprintf("%.1f (%.1f+%.1f)", $m{soff}, $m{noff}, $m{poff});
        print "difference on - off over the ", scalar @dcpu, " pairs:\n";
        print "  server CPU per request:              ", spread(@dcpu), "\n";
        print "  nginx CPU per request:               ", spread(@dnginx), "\n";
        print "  nginx part, in % of server CPU:      ", spread(@dshare), "\n";
        print "  req/s:                               ", spread(@drps), "\n";
        print "target (issue 14): server CPU per request within 2 % with the zone\n";
    '
    echo "the zone counted $counted channel-log answers in the on runs; wrk $sent (warm-up and measured;"
    echo "wrk does not count those in flight when it stops)"
    echo "error log of these runs: $(grep -cE '\[(alert|crit|emerg)\]' \
        "$out/error-status.log" || true) [alert]/[crit]/[emerg] lines"
}

if [ -n "$status_only" ]; then
    status_report
    exit 0
fi

alerts=$(grep -cE '\[(alert|crit|emerg)\]' "$out/error.log" || true)

ceiling=$(awk '$1 == "ceiling" {print $2}' "$out/results")

echo
echo "corelog bench: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)" GiB"}' /proc/meminfo), $(uname -r);" \
     "wrk -t$threads -c$conns -d$duration; pgbench -c$pgclients;" \
     "fsync=on synchronous_commit=on"
echo
# limit: the best a one-row-per-request API could do on cores it shares
# with PostgreSQL, 1 / (1/http + 1/bulk), and the route's fraction of it
limit() {
    awk -v h="$ceiling" -v b="$(awk -v n="$1" '$1 == n {print $2}' "$out/bulk")" \
        'BEGIN { if (h > 0 && b > 0) printf "%.0f", 1 / (1 / h + 1 / b);
                 else print "-" }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}
printf '%-22s %10s %9s %9s %8s %7s %12s %12s %7s %10s\n' route req/s p50ms \
    p99ms non2xx '÷http' 'bulk rows/s' 'limit req/s' '÷limit' '1-row db'
while read -r name rps p50 p99 non2xx; do
    [ "$name" = ceiling ] && continue
    db=$(awk -v n="$name" '$1 == n {printf "%.0f", $2}' "$out/pgbench")
    bulk=$(awk -v n="$name" '$1 == n {print $2}' "$out/bulk")
    lim=$(limit "$name")
    printf '%-22s %10.0f %9.2f %9.2f %8s %7s %12s %12s %7s %10s\n' \
        "$name" "$rps" "$p50" "$p99" "$non2xx" "$(ratio "$rps" "$ceiling")" \
        "${bulk:--}" "$lim" "$(ratio "$rps" "$lim")" "${db:--}"
done <"$out/results"
while read -r name rps p50 p99 non2xx; do
    [ "$name" = ceiling ] || continue
    printf '%-22s %10.0f %9.2f %9.2f %8s\n' "http ceiling (return)" "$rps" \
        "$p50" "$p99" "$non2xx"
done <"$out/results"
echo "bulk: PostgreSQL alone, 1000 rows per transaction (pgbench -c$bulk_clients, ${bulk_duration}; a core log"
echo "is its claim and its log); limit = 1 / (1/http + 1/bulk), the best one row per request could do"
echo "on cores shared with PostgreSQL; ÷limit: the route's fraction of it (issue 15: at least 0.6);"
echo "1-row db: pgbench -c$pgclients, one INSERT per transaction (mostly the commit's flush: the disk of the day)"
echo
echo "CPU per request (pgbench: per transaction; bulk: per row) during the measured runs, in core-µs ($(nproc) cores shared);"
echo "body:accepted is the largest channel log (202), body:rejected the costliest 400 (parsed whole),"
echo "body:values one at the limit that the value bound refuses unparsed, body:malformed one broken at its end (400);"
echo "budget: $(nproc) cores / (0.6 x limit), the CPU per request at issue 15's target:"
printf '  %-20s %8s %9s %15s %8s %28s\n' route nginx postgres \
    'client+kernel' idle 'budget at 0.6 (req/s)'
while read -r name nginx pg rest idle; do
    lim=$(limit "$name")
    budget=-
    if [ "$lim" != - ]; then
        budget=$(awk -v l="$lim" -v c="$(nproc)" \
            'BEGIN { printf "%.1f (%.0f)", c * 1e6 / (0.6 * l), 0.6 * l }')
    fi
    printf '  %-20s %8s %9s %15s %8s %28s\n' "$name" "$nginx" "$pg" "$rest" \
        "$idle" "$budget"
done <"$out/cpu"
echo
echo "statements (measured run): route, statements, rows, mean rows per statement"
sed 's/^/  /' "$out/batches"
echo "rows per statement, all workers, warm-up included:"
perl -ne '
    next unless /rows per statement "(\w+)": (.*)/;
    my ($s, $h) = ($1, $2);
    for (split / /, $h) { my ($k, $v) = split /:/; $sum{$s}{$k} += $v;
                          push @{$order{$s}}, $k unless $seen{$s}{$k}++ }
    END { for my $s (sort keys %sum) {
              print "  $s:", join("", map { " $_:$sum{$s}{$_}" }
                                      @{$order{$s}}), "\n" } }
' "$out/error.log"
echo "peak RSS of each worker (VmHWM):$rss"
if [ -s "$out/rss" ]; then
    # per route: each worker's RSS in the first and last sample, and growth
    awk '{ n = $1; if (!(n in first)) first[n] = $0; last[n] = $0 }
         END { for (n in first) {
                   split(first[n], f, " "); split(last[n], l, " ");
                   line = "  " n ": RSS kB first -> last:";
                   worst = 0;
                   for (i = 2; i in f; i++) {
                       g = (l[i] - f[i]) * 100 / f[i];
                       if (g > worst) worst = g;
                       line = line sprintf(" %d -> %d", f[i], l[i]);
                   }
                   print line sprintf(" (largest growth %.1f%%)", worst);
               } }' "$out/rss"
fi
echo "error log: $alerts [alert]/[crit]/[emerg] lines"
[ -z "$status_runs" ] || status_report
