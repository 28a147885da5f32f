#!/bin/bash
# make bench: the three routes against a private, durable PostgreSQL
# (fsync and synchronous_commit on) and nginx with the module
# (worker_processes auto), with wrk at 64 connections; the HTTP ceiling
# (nginx answering `return 201` to the same POST) and the single-row
# database ceiling (pgbench, one INSERT per transaction, 32 clients) in the
# same run; one table of figures at the end.  Then the channel route with
# the status zone on (the shipped configuration) and off (without
# corelog_status_zone and the server of corelog_status): two nginx side by
# side, the load alternating on, off, on, off... (BENCH_STATUS_PAIRS
# pairs), and the difference per pair; BENCH_STATUS_ONLY=1 (make
# bench-status) runs only that, BENCH_NO_STATUS=1 skips it.
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
    local p
    for p in "$out"/nginx*.pid; do
        [ -f "$p" ] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
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
# first server, the API's).
# write_conf ZONE NAME PORT ERRLOG: $out/NAME.conf, whose pid file is
# $out/NAME.pid and whose API listens on PORT.  ZONE=on is the shipped
# configuration as it is (with its status zone and the server of
# corelog_status on $status_port); ZONE=off is the same without the
# corelog_status_zone line and without the server whose location has
# corelog_status (which needs the zone: nginx -t would fail)
write_conf() {
    ZONE=$1 PIDFILE=$out/$2.pid PORT=$3 ERRLOG=$4 \
    PGCONNS=${BENCH_PG_CONNECTIONS:-} BATCH=${BENCH_BATCH_MAX:-} \
    MODULE=$module STATUS_PORT=$status_port \
    CONNINFO="$conninfo ${BENCH_CONNINFO_EXTRA:-}" \
    OUT=$out perl -pe '
        s/\@MODULE\@/$ENV{MODULE}/g;
        s/\@PORT\@/$ENV{PORT}/g;
        s/\@STATUS_PORT\@/$ENV{STATUS_PORT}/g;
        s/\@CONNINFO\@/$ENV{CONNINFO}/g;
        s/^error_log .*/error_log $ENV{ERRLOG} notice;/;
        s/^pid .*/pid $ENV{PIDFILE};/;
        s/corelog_connections \d+;/corelog_connections $ENV{PGCONNS};/
            if $ENV{PGCONNS};
        s/corelog_batch_max \d+;/corelog_batch_max $ENV{BATCH};/ if $ENV{BATCH};
        $_ = "" if /^\s*limit_(?:req|conn)\s/;
        $_ .= join "", map { "    ${_}_temp_path \"$ENV{OUT}/tmp/$_\";\n" }
                       qw(client_body proxy fastcgi uwsgi scgi)
            if /^http\s*\{/;
        $_ = "        location = /ceiling {\n            return 201 \x27{}\x27;\n"
             . "        }\n\n" . $_ if /^\s*location \/ \{/ && !$ceiling++;
        if ($ENV{ZONE} eq "off") {
            $_ = "" if /^\s*corelog_status_zone\s/;
            # each server{} block whole, dropped if it serves corelog_status
            (my $code = $_) =~ s/#[^\n]*//g;
            if (!$in && $code =~ /^\s*server\s*\{/) { $in = 1; $depth = 0;
                                                      $buf = "" }
            if ($in) {
                $buf .= $_;
                $depth += ($code =~ tr/{//) - ($code =~ tr/}//);
                $_ = "";
                if ($depth <= 0) {
                    $in = 0;
                    $_ = $buf unless $buf =~ /^\s*corelog_status\s*;/m;
                }
            }
        }
    ' "$top/conf/nginx.conf" >"$out/$2.conf"
}
write_conf on nginx "$port" "$out/error.log"
write_conf on nginx-on "$port" "$out/error-status.log"
write_conf off nginx-off "$off_port" "$out/error-status.log"
if grep -q '@[A-Z_]*@' "$out/nginx.conf"; then
    die "conf/nginx.conf has a @...@ value run.sh does not replace: $(grep -o '@[A-Z_]*@' "$out/nginx.conf" | sort -u | tr '\n' ' ')"
fi
grep -Eq '^\s*corelog_status_zone\s' "$out/nginx-on.conf" ||
    die "conf/nginx.conf has no corelog_status_zone: nothing to turn off"
if grep -Eq '^\s*corelog_status(_zone)?\s*[ ;]' "$out/nginx-off.conf"; then
    die "could not remove the status zone from conf/nginx.conf"
fi
for c in nginx nginx-on nginx-off; do
    /usr/sbin/nginx -t -q -p "$out/" -c "$out/$c.conf" -e "$out/error.log" ||
        die "nginx -t fails on $out/$c.conf"
    rm -f "$out/$c.pid"
done

# nginx_start NAME PREFIX ERRLOG: start nginx with $out/NAME.conf, set
# $workers to its workers' pids; nginx_stop NAME: a graceful stop (each
# worker logs how many rows its statements carried)
workers=
nginx_start() {
    mkdir -p "$2"
    /usr/sbin/nginx -p "$2" -c "$out/$1.conf" -e "$3"
    sleep 1
    workers=$(pgrep -P "$(cat "$out/$1.pid")" | tr '\n' ' ')
}
nginx_stop() {
    kill -QUIT "$(cat "$out/$1.pid")"
    for _ in $(seq 100); do
        [ -f "$out/$1.pid" ] || return 0
        sleep 0.1
    done
    die "nginx ($1) did not stop in 10 s"
}

[ -n "$status_only" ] || nginx_start nginx "$out/" "$out/error.log"

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

# where run and cpu_per_request append their figures (the status zone's
# A/B runs: $out/status)
rdir=$out

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
               (d[3] - d[1] - d[2]) * us, d[4] * us }' >>"$rdir/cpu"
}

# run NAME SCRIPT [CONNECTIONS DURATION WARMUP]: warm-up, then the
# measured run; appends to $rdir/results (and cpu, batches, rss)
run() {
    local name=$1 script=$2 log=$rdir/wrk-$1.txt
    local conns=${3:-$conns} duration=${4:-$duration} warmup=${5:-$warmup}
    # core-log pairs: the warm-up uses 0.., the measured run 500000..
    BENCH_RUN=w BENCH_OFFSET=0 wrk -t"$threads" -c"$conns" \
        -d"$warmup" -s "$top/bench/$script" "$url" >"$rdir/wrk-$1.warmup.txt"
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
    ) >>"$rdir/rss" 2>/dev/null &
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
    echo "$name $rps $p50 $p99 ${non2xx:-0}" >>"$rdir/results"
    cpu_per_request "$name" "$rps" "$before" "$after"
    if [ "$name" != ceiling ] && [ "${name#body:}" = "$name" ]; then
        psql -d "$conninfo" -tA -F ' ' -c "
            SELECT '$name', calls, rows,
                   round(rows::numeric / nullif(calls, 0), 1)
              FROM pg_stat_statements
             WHERE query LIKE 'WITH input AS%'
             ORDER BY calls DESC LIMIT 1" >>"$rdir/batches"
    fi
}

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
            psql -d "$conninfo" -c 'TRUNCATE corelog.channel_logs' \
                -c 'CHECKPOINT'
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
    SDIR=$sdir perl -e '
        my $d = $ENV{SDIR};
        my (%rps, %cpu);
        open my $r, "<", "$d/results" or die;
        while (<$r>) { my @f = split; $rps{$f[0]} = $f[1] }
        open my $c, "<", "$d/cpu" or die;
        while (<$c>) { my @f = split; $cpu{$f[0]} = [@f[1 .. 3]] }
        sub median { my @v = sort { $a <=> $b } @_; my $n = @v;
                     $n % 2 ? $v[$n / 2] : ($v[$n / 2 - 1] + $v[$n / 2]) / 2 }
        sub pct { ($_[0] - $_[1]) * 100 / $_[1] }
        # the median, the interval that holds the true median with 95 %
        # confidence (from the sign test: the k-th smallest and k-th
        # largest differences), and the extremes
        sub spread {
            my @v = sort { $a <=> $b } @_;
            my $n = @v;
            my ($k, $cum, $p) = (0, 0, 0.5 ** $n);
            for my $j (0 .. $n) {
                $cum += $p;
                last if $cum > 0.025;
                $k = $j + 1;
                $p *= ($n - $j) / ($j + 1);
            }
            my $ci = $k ? sprintf("95 %% interval %+.1f .. %+.1f; ",
                                  $v[$k - 1], $v[$n - $k])
                        : "too few pairs for a 95 % interval; ";
            sprintf "median %+5.1f %% (%smin %+.1f, max %+.1f)",
                    median(@v), $ci, $v[0], $v[-1];
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
[ -z "$status_runs" ] || status_report
