# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # variables set and read by the callers
# bench/lib.sh: what bench/run.sh (make bench, make bench-status, make
# soak) and bench/ab.sh (make bench-ab) share: a private PostgreSQL with
# durable commits, its databases (migrated, seeded), nginx's
# configurations, starting and stopping nginx, the CPU accounting and one
# wrk run.  Sourced, not run.  The caller sets before sourcing:
#   top (the tree whose bench/ scripts run), out (the run's directory),
#   pgport, threads, conns, duration, warmup
# and before calling run: url, conninfo, workers, rdir.

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

die() { echo "bench: $*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"

as_pg=()
if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
fi

psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# stop: every nginx whose pid file is $out/nginx*.pid, and PostgreSQL in
# $out/pg (what a run left behind, or this run at its end)
stop() {
    local p
    for p in "$out"/nginx*.pid; do
        [ -f "$p" ] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$out/pg" -m fast -w stop >/dev/null 2>&1 || true
}

# fresh_out: an empty $out (and $out/tmp, nginx's temporary files)
fresh_out() {
    rm -rf "$out"
    mkdir -p "$out/tmp"
    chmod 777 "$out" "$out/tmp"
    if [ "$(id -u)" = 0 ]; then chown postgres "$out"; fi
}

# pg_setup: a PostgreSQL cluster in $out/pg on 127.0.0.1:$pgport with
# durable commits, as in production; sets $postmaster
pg_setup() {
    "${as_pg[@]}" "$pgbin/initdb" -D "$out/pg" -U postgres --auth=trust \
        -E UTF8 --locale="${BENCH_LOCALE:-C}" >/dev/null ||
        die "initdb --locale=${BENCH_LOCALE:-C} failed (BENCH_LOCALE: is it in locale -a?)"
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
    [ -n "${BENCH_PGCONF:-}" ] &&
        printf '%s\n' "$BENCH_PGCONF" >>"$out/pg/postgresql.conf"
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$out/pg" -l "$out/postgres.log" -w \
        start >/dev/null
    postmaster=$(head -n 1 "$out/pg/postmaster.pid")
}

# db_conninfo DB: the conninfo of database DB of this cluster
db_conninfo() {
    echo "host=${BENCH_PGHOST:-127.0.0.1} port=$pgport dbname=$1 user=postgres"
}

# db_create DB TREE: create database DB and load TREE's schema into it
# with TREE's own scripts/migrate.sh; a tree without one (older commits):
# its sql/*.sql in order, or its conf/schema.sql, each file in one
# transaction.  Then pg_stat_statements
db_create() {
    local db=$1 tree=$2 ci f files
    ci=$(db_conninfo "$db")
    psql -d "host=127.0.0.1 port=$pgport dbname=postgres user=postgres" \
        -c "CREATE DATABASE $db"
    if [ -x "$tree/scripts/migrate.sh" ]; then
        "$tree/scripts/migrate.sh" "$ci" >/dev/null ||
            die "$tree/scripts/migrate.sh failed on database $db"
    else
        files=$(ls "$tree"/sql/[0-9]*.sql 2>/dev/null ||
                ls "$tree"/conf/schema.sql 2>/dev/null) ||
            die "$tree has no scripts/migrate.sh, sql/*.sql or conf/schema.sql"
        for f in $files; do
            psql -1 -d "$ci" -f "$f" >/dev/null || die "$f failed on database $db"
        done
    fi
    psql -d "$ci" -c 'CREATE EXTENSION pg_stat_statements'
}

# db_seed CONNINFO PAIRS: an account with a traffic source, a core
# pathname, a channel, a log group and a log stream, a token, and PAIRS
# request/response pairs for core logs (ids made from a counter: requests
# 00000000-0000-4000-8000-<12 hex>, responses ...-9000-...); sets acc ts cp
# ch grp stream token
db_seed() {
    local ci=$1 n=$2
    read -r acc ts cp ch grp stream token <<<"$(psql -d "$ci" -tA -F ' ' <<EOS
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
    [ -n "$token" ] || die "seeding failed ($ci)"
    psql -d "$ci" <<EOS
INSERT INTO corelog.requests (id, traffic_source_id)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, '$ts'
  FROM generate_series(1, $n) i;
INSERT INTO corelog.responses (id, traffic_source_id)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, '$ts'
  FROM generate_series(1, $n) i;
VACUUM ANALYZE;
CHECKPOINT;
EOS
}

# route_tables ROUTE: the tables a route writes
route_tables() {
    case $1 in
        core_log) echo corelog.core_log_claims corelog.core_logs ;;
        channel_log) echo corelog.channel_logs ;;
        logtank) echo corelog.logtanks ;;
    esac
}

# empty_tables CONNINFO ROUTE: truncate the route's tables (those the
# database has) and checkpoint, so that a run starts from an empty table
# and clean buffers.  One TRUNCATE for them all: since migration 004 the
# claims cannot be truncated while core logs remain
empty_tables() {
    local t list=""
    for t in $(route_tables "$2"); do list="$list,'$t'"; done
    psql -d "$1" -c "DO \$\$ DECLARE l text; BEGIN
        SELECT string_agg(t, ', ') INTO l
          FROM unnest(ARRAY[${list#,}]::text[]) t
         WHERE to_regclass(t) IS NOT NULL;
        IF l IS NOT NULL THEN EXECUTE 'TRUNCATE ' || l; END IF;
        END \$\$" -c 'CHECKPOINT'
}

# write_conf ZONE NAME PORT ERRLOG [SRC MODULE STATUS_PORT CONNINFO]:
# $out/NAME.conf from SRC (default: this tree's conf/nginx.conf), whose
# pid file is $out/NAME.pid and whose API listens on PORT, with the @...@
# values replaced (MODULE, default $module; STATUS_PORT, default
# $status_port; CONNINFO, default $conninfo), its error log ERRLOG, no
# limit_req/limit_conn (one address sends all the load), temporary files
# in $out/tmp, and the HTTP ceiling's location (`return 201`) in the
# first server.  ZONE=on is the configuration as it is; ZONE=off is the
# same without the corelog_status_zone line and without the server whose
# location has corelog_status (which needs the zone: nginx -t would fail)
write_conf() {
    ZONE=$1 PIDFILE=$out/$2.pid PORT=$3 ERRLOG=$4 \
    PGCONNS=${BENCH_PG_CONNECTIONS:-} BATCH=${BENCH_BATCH_MAX:-} \
    BATCH_WAIT=${BENCH_BATCH_WAIT:-} \
    MODULE=${6:-$module} STATUS_PORT=${7:-$status_port} \
    CONNINFO="${8:-$conninfo} ${BENCH_CONNINFO_EXTRA:-}" \
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
        s/corelog_batch_wait \w+;/corelog_batch_wait $ENV{BATCH_WAIT};/
            if $ENV{BATCH_WAIT} ne "";
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
    ' "${5:-$top/conf/nginx.conf}" >"$out/$2.conf"
}

# check_conf NAME WHAT: $out/NAME.conf has no @...@ value left, its own pid
# file and error log, and passes nginx -t; else stop, naming WHAT (the
# file it was made from)
check_conf() {
    local f=$out/$1.conf left
    left=$(grep -o '@[A-Z_]*@' "$f" | sort -u | paste -sd ' ' || true)
    [ -z "$left" ] || die "$2 has a @...@ value the bench does not replace: $left"
    grep -q "^pid $out/$1.pid;" "$f" ||
        die "$2 has no top-level pid line to point at $out/$1.pid"
    grep -q "^error_log " "$f" || die "$2 has no top-level error_log line"
    /usr/sbin/nginx -t -q -p "$out/" -c "$f" -e "$out/error.log" ||
        die "nginx -t fails on $f (made from $2)"
    rm -f "$out/$1.pid"
}

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

# cpu_sample: CPU ticks so far: nginx workers ($workers), PostgreSQL
# (postmaster and children), all CPUs busy, all CPUs idle, wall clock (in
# ticks)
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
# pgbench transaction, or per row), by who spent it, in core-µs; appends
# "NAME nginx postgres others idle" to $rdir/cpu
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
# measured run, wrk against $url; appends "NAME req/s p50 p99 non2xx" to
# $rdir/results (and to cpu, batches, rss).  Core-log pairs: the warm-up
# uses 1.., the measured run $moffset+1.. (default 500000)
run() {
    local name=$1 script=$2 log=$rdir/wrk-$1.txt
    local conns=${3:-$conns} duration=${4:-$duration} warmup=${5:-$warmup}
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
    BENCH_RUN=m BENCH_OFFSET=${moffset:-500000} wrk -t"$threads" -c"$conns" \
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
