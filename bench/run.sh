#!/bin/bash
# make bench: the three routes against a private, durable PostgreSQL
# (fsync and synchronous_commit on) and nginx with the module
# (worker_processes auto), with wrk at 64 connections; the HTTP ceiling
# (nginx answering `return 201` to the same POST) and the single-row
# database ceiling (pgbench, one INSERT per transaction, 32 clients) in the
# same run; one table of figures at the end.
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
pgport=${BENCH_PGPORT:-18432}
pairs=${BENCH_PAIRS:-1500000}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
module=$top/objs/ngx_http_corelog_module.so

die() { echo "bench: $*" >&2; exit 1; }

[ -f "$module" ] || die "build the module first (make build)"
command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"

as_pg=()
if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
fi

stop() {
    [ -f "$out/nginx.pid" ] && kill -QUIT "$(cat "$out/nginx.pid")" 2>/dev/null || true
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$out/pg" -m fast -w stop >/dev/null 2>&1 || true
}
# BENCH_KEEP=1 leaves both running after the run (to profile by hand)
cleanup() { [ -n "${BENCH_KEEP:-}" ] || stop; }
trap cleanup EXIT

stop
rm -rf "$out"
mkdir -p "$out/tmp"
chmod 777 "$out" "$out/tmp"
[ "$(id -u)" = 0 ] && chown postgres "$out"

# PostgreSQL: durable commits, as in production
"${as_pg[@]}" "$pgbin/initdb" -D "$out/pg" -U postgres --auth=trust -E UTF8 \
    --locale=C >/dev/null
cat >>"$out/pg/postgresql.conf" <<EOC
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$out'
fsync = on
synchronous_commit = on
shared_buffers = 512MB
max_connections = 200
shared_preload_libraries = 'pg_stat_statements'
EOC
[ -n "${BENCH_PGCONF:-}" ] && printf '%s\n' "$BENCH_PGCONF" >>"$out/pg/postgresql.conf"
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$out/pg" -l "$out/postgres.log" -w start >/dev/null

conninfo="host=${BENCH_PGHOST:-127.0.0.1} port=$pgport dbname=corelog user=postgres"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d "host=127.0.0.1 port=$pgport dbname=postgres user=postgres" \
    -c 'CREATE DATABASE corelog'
"$top/scripts/migrate.sh" "$conninfo" >/dev/null
psql -d "$conninfo" -c 'CREATE EXTENSION pg_stat_statements'

echo "bench: seeding $pairs request/response pairs..."
read -r acc ts cp ch grp stream token <<<"$(psql -d "$conninfo" -tA -F ' ' <<EOS
WITH a AS (INSERT INTO corelog.accounts (name) VALUES ('bench') RETURNING id),
     t AS (INSERT INTO corelog.traffic_sources (account_id, name)
           SELECT id, 'bench' FROM a RETURNING id),
     p AS (INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
           SELECT id, '/bench' FROM t RETURNING id),
     c AS (INSERT INTO corelog.channels (account_id, name)
           SELECT id, 'bench' FROM a RETURNING id),
     g AS (INSERT INTO corelog.log_groups (account_id, project_id, name)
           SELECT id, 'bench', 'bench' FROM a RETURNING id),
     s AS (INSERT INTO corelog.log_streams (log_group_id, name)
           SELECT id, 'bench' FROM g RETURNING id)
SELECT a.id, t.id, p.id, c.id, g.id, s.id,
       corelog.create_token(a.id, 'bench', 'bench')
  FROM a, t, p, c, g, s;
EOS
)"
psql -d "$conninfo" <<EOS
INSERT INTO corelog.requests (id, traffic_source_id)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, '$ts'
  FROM generate_series(1, $pairs) i;
INSERT INTO corelog.responses (id, traffic_source_id)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, '$ts'
  FROM generate_series(1, $pairs) i;
VACUUM ANALYZE;
CHECKPOINT;
EOS
[ -n "${BENCH_SQL:-}" ] && psql -d "$conninfo" -c "$BENCH_SQL"

# nginx: the shipped configuration, plus the HTTP ceiling location (in the
# first server, the API's; the second serves the status on $status_port)
PGCONNS=${BENCH_PG_CONNECTIONS:-} BATCH=${BENCH_BATCH_MAX:-} \
MODULE=$module PORT=$port STATUS_PORT=$status_port \
CONNINFO="$conninfo ${BENCH_CONNINFO_EXTRA:-}" OUT=$out perl -pe '
    s/\@MODULE\@/$ENV{MODULE}/g;
    s/\@PORT\@/$ENV{PORT}/g;
    s/\@STATUS_PORT\@/$ENV{STATUS_PORT}/g;
    s/\@CONNINFO\@/$ENV{CONNINFO}/g;
    s/^error_log .*/error_log $ENV{OUT}\/error.log notice;/;
    s/^pid .*/pid $ENV{OUT}\/nginx.pid;/;
    s/corelog_connections \d+;/corelog_connections $ENV{PGCONNS};/
        if $ENV{PGCONNS};
    s/corelog_batch_max \d+;/corelog_batch_max $ENV{BATCH};/ if $ENV{BATCH};
    $_ = "" if /^\s*limit_(?:req|conn)\s/;
    $_ .= join "", map { "    ${_}_temp_path \"$ENV{OUT}/tmp/$_\";\n" }
                   qw(client_body proxy fastcgi uwsgi scgi)
        if /^http\s*\{/;
    $_ = "        location = /ceiling {\n            return 201 \x27{}\x27;\n"
         . "        }\n\n" . $_ if /^\s*location \/ \{/ && !$ceiling++;
' "$top/conf/nginx.conf" >"$out/nginx.conf"
if grep -q '@[A-Z_]*@' "$out/nginx.conf"; then
    die "conf/nginx.conf has a @...@ value run.sh does not replace: $(grep -o '@[A-Z_]*@' "$out/nginx.conf" | sort -u | tr '\n' ' ')"
fi
/usr/sbin/nginx -t -q -p "$out/" -c "$out/nginx.conf" -e "$out/error.log" ||
    die "nginx -t fails on $out/nginx.conf"
rm -f "$out/nginx.pid"

/usr/sbin/nginx -p "$out/" -c "$out/nginx.conf" -e "$out/error.log"
sleep 1

workers=$(pgrep -P "$(cat "$out/nginx.pid")" | tr '\n' ' ')

export BENCH_TS=$ts BENCH_CP=$cp BENCH_CHANNEL=$ch BENCH_GROUP=$grp \
       BENCH_STREAM=$stream BENCH_TOKEN=$token BENCH_THREADS=$threads

url=http://127.0.0.1:$port
# for running wrk by hand against a kept bench (BENCH_KEEP=1)
declare -p BENCH_TS BENCH_CP BENCH_CHANNEL BENCH_GROUP BENCH_STREAM \
    BENCH_TOKEN BENCH_THREADS >"$out/env"

# CPU ticks so far: nginx workers, PostgreSQL (postmaster and children),
# all CPUs busy, all CPUs idle, wall clock (in ticks)
postmaster=$(head -n 1 "$out/pg/postmaster.pid")
cpu_sample() {
    local pids
    pids="$postmaster $(pgrep -P "$postmaster" | tr '\n' ' ')"
    {
        for w in $workers; do echo "n $(cut -d ')' -f 2- "/proc/$w/stat")"; done
        for w in $pids; do echo "p $(cut -d ')' -f 2- "/proc/$w/stat" 2>/dev/null)"; done
        # backends that exited: in the postmaster's time of reaped children
        echo "c $(cut -d ')' -f 2- "/proc/$postmaster/stat")"
        head -n 1 /proc/stat
        echo "u $(cut -d ' ' -f 1 /proc/uptime)"
    } | awk -v hz="$(getconf CLK_TCK)" '
        $1 == "n" && NF > 14 { n += $13 + $14 }
        $1 == "p" && NF > 14 { p += $13 + $14 }
        $1 == "c" && NF > 16 { p += $15 + $16 }
        $1 == "cpu" { busy = $2 + $3 + $4 + $7 + $8 + $9; idle = $5 + $6 }
        $1 == "u" { wall = $2 * hz }
        END { printf "%d %d %d %d %d", n, p, busy, idle, wall }'
}

# cpu_per_request NAME RATE BEFORE AFTER: CPU time per request (or per
# pgbench transaction), by who spent it, in core-µs
cpu_per_request() {
    echo "$1 $2 $3 $4" | awk -v hz="$(getconf CLK_TCK)" '{
        rate = $2; n = (NF - 2) / 2;
        for (i = 1; i <= n; i++) d[i] = $(i + 2 + n) - $(i + 2);
        # d: nginx, postgres, busy, idle, wall (all in ticks)
        reqs = rate * d[5] / hz; if (reqs < 1) reqs = 1;
        us = 1e6 / hz / reqs;
        printf "%s %.1f %.1f %.1f %.1f\n", $1, d[1] * us, d[2] * us,
               (d[3] - d[1] - d[2]) * us, d[4] * us }' >>"$out/cpu"
}

# run NAME SCRIPT [CONNECTIONS DURATION]: warm-up, then the measured run;
# appends to results
run() {
    local name=$1 script=$2 log=$out/wrk-$1.txt
    local conns=${3:-$conns} duration=${4:-$duration}
    # core-log pairs: the warm-up uses 0.., the measured run 500000..
    BENCH_RUN=w BENCH_OFFSET=0 wrk -t"$threads" -c"$conns" \
        -d"$warmup" -s "$top/bench/$script" "$url" >/dev/null
    psql -d "$conninfo" -c 'SELECT pg_stat_statements_reset()' >/dev/null

    # worker RSS every 5 s during the measured run (make soak reads it)
    (
        while sleep 5; do
            line=$name
            for w in $workers; do
                kb=$(awk '/VmRSS/ {print $2}' "/proc/$w/status" 2>/dev/null)
                [ -n "$kb" ] || continue 2
                line="$line $kb"
            done
            echo "$line"
        done
    ) >>"$out/rss" 2>/dev/null &
    local sampler=$!

    local before after
    before=$(cpu_sample)
    BENCH_RUN=m BENCH_OFFSET=500000 wrk -t"$threads" -c"$conns" \
        -d"$duration" --latency -s "$top/bench/$script" "$url" >"$log"
    after=$(cpu_sample)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local rps p50 p99 non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' "$log")
    p50=$(sed -n 's/^BENCH p50=\([0-9.]*\).*/\1/p' "$log")
    p99=$(sed -n 's/.* p99=\([0-9.]*\).*/\1/p' "$log")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$log")
    echo "$name $rps $p50 $p99 ${non2xx:-0}" >>"$out/results"
    cpu_per_request "$name" "$rps" "$before" "$after"
    if [ "$name" != ceiling ] && [ "${name#body:}" = "$name" ]; then
        psql -d "$conninfo" -tA -F ' ' -c "
            SELECT '$name', calls, rows,
                   round(rows::numeric / nullif(calls, 0), 1)
              FROM pg_stat_statements
             WHERE query LIKE 'WITH input AS%'
             ORDER BY calls DESC LIMIT 1" >>"$out/batches"
    fi
}

: >"$out/results"
: >"$out/cpu"
: >"$out/batches"
: >"$out/rss"

routes=" ${BENCH_ROUTES:-ceiling core_log channel_log logtank} "
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
if [ -z "${BENCH_NO_BODIES:-}" ] && [ "${BENCH_ROUTES:-}" = "" ]; then
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
if [ -z "${BENCH_NO_PGBENCH:-}" ]; then
    pgb core_log "$out/pgbench-core.sql"
    pgb channel_log "$out/pgbench-channel.sql"
    pgb logtank "$out/pgbench-logtank.sql"
fi

rss=""
for w in $workers; do
    rss="$rss $(awk '/VmHWM/ {print $2}' "/proc/$w/status" 2>/dev/null)kB"
done

# stop nginx: each worker logs how many rows its statements carried
kill -QUIT "$(cat "$out/nginx.pid")"
for _ in $(seq 100); do
    [ -f "$out/nginx.pid" ] || break
    sleep 0.1
done

alerts=$(grep -cE '\[(alert|crit|emerg)\]' "$out/error.log" || true)

ceiling=$(awk '$1 == "ceiling" {print $2}' "$out/results")

echo
echo "corelog bench: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)" GiB"}' /proc/meminfo), $(uname -r);" \
     "wrk -t$threads -c$conns -d$duration; pgbench -c$pgclients;" \
     "fsync=on synchronous_commit=on"
echo
printf '%-22s %10s %9s %9s %8s %12s %10s %12s\n' route req/s p50ms p99ms non2xx \
    'db-ceiling' '÷db' '÷http'
while read -r name rps p50 p99 non2xx; do
    [ "$name" = ceiling ] && continue
    db=$(awk -v n="$name" '$1 == n {printf "%.0f", $2}' "$out/pgbench")
    printf '%-22s %10.0f %9.2f %9.2f %8s %12s %10s %12s\n' \
        "$name" "$rps" "$p50" "$p99" "$non2xx" "${db:--}" \
        "$(awk -v a="$rps" -v b="$db" 'BEGIN { if (b) printf "%.2f", a / b; else print "-" }')" \
        "$(awk -v a="$rps" -v b="$ceiling" 'BEGIN { if (b) printf "%.2f", a / b; else print "-" }')"
done <"$out/results"
while read -r name rps p50 p99 non2xx; do
    [ "$name" = ceiling ] || continue
    printf '%-22s %10.0f %9.2f %9.2f %8s\n' "http ceiling (return)" "$rps" \
        "$p50" "$p99" "$non2xx"
done <"$out/results"
echo
echo "CPU per request (pgbench: per transaction) during the measured runs, in core-µs ($(nproc) cores shared);"
echo "body:accepted is the largest channel log (202), body:rejected the costliest 400 (parsed whole),"
echo "body:values one at the limit that the value bound refuses unparsed, body:malformed one broken at its end (400):"
printf '  %-20s %8s %9s %15s %8s %28s\n' route nginx postgres \
    'client+kernel' idle 'budget at target (req/s)'
while read -r name nginx pg rest idle; do
    target=$(awk -v n="$name" '$1 == n {print $2}' <<EOT
core_log 3.5
channel_log 4
logtank 3.5
EOT
)
    db=$(awk -v n="$name" '$1 == n {printf "%.0f", $2}' "$out/pgbench")
    budget=-
    if [ -n "$db" ] && [ -n "$target" ]; then
        budget=$(awk -v t="$target" -v d="$db" -v c="$(nproc)" \
            'BEGIN { printf "%.1f (%.0f)", c * 1e6 / (t * d), t * d }')
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
