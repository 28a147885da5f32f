#!/bin/bash
# `make run`: a local demo of the corelog module.
#
# Starts a private PostgreSQL cluster whose data persists in .run/pgdata
# (git-ignored), applies the schema migrations (scripts/migrate.sh), seeds
# a demo account, then runs nginx in the foreground with the shipped
# conf/nginx.conf and prints a token and three curl commands: a core log
# (201), a channel log (202) and a logtank (201).  Ctrl-C stops nginx and
# PostgreSQL.
#
# Environment: PORT (nginx, default 8080), STATUS_PORT (the status
# endpoint, default PORT + 1), PGPORT (PostgreSQL, default 54329), NGINX
# (default /usr/sbin/nginx).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
run=$top/.run
pgdata=$run/pgdata
pglog=$run/postgres.log
module=$top/objs/ngx_http_corelog_module.so
nginx=${NGINX:-/usr/sbin/nginx}
PORT=${PORT:-8080}
STATUS_PORT=${STATUS_PORT:-$((PORT + 1))}
PGPORT=${PGPORT:-54329}
conninfo="host=127.0.0.1 port=$PGPORT dbname=corelog user=postgres"
admin_conninfo="host=127.0.0.1 port=$PGPORT dbname=postgres user=postgres"

die() { echo "run: $*" >&2; exit 1; }

[ -f "$module" ] || die "$module is missing: the build failed or did not run (make build)"
[ -x "$nginx" ] || die "$nginx not found (make deps)"

pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || pgbin=$(pg_config --bindir 2>/dev/null || true)
[ -x "$pgbin/initdb" ] || die "PostgreSQL server programs not found (make deps)"
psql=$pgbin/psql
[ -x "$psql" ] || psql=psql

# PostgreSQL refuses to run as root: use the "postgres" system user then.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user"
    as_pg=(runuser -u postgres --)
fi
pg_ctl() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" "$@"; }
sql() { PGOPTIONS='-c client_min_messages=warning' "$psql" -X -q -v ON_ERROR_STOP=1 -d "$conninfo" "$@"; }

# True if nothing listens on 127.0.0.1:$1.
port_free() {
    perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new(
        LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Proto => "tcp",
        Listen => 1, ReuseAddr => 1)' "$1"
}

# True when every directory of $1 lets others through (o+x): as root,
# PostgreSQL runs as "postgres" and nginx's workers as "nobody".
world_traversable() {
    local p=$1 mode
    while :; do
        mode=$(stat -L -c %A "$p" 2>/dev/null) || return 1
        case $mode in
            *[xt]) ;;
            *) return 1 ;;
        esac
        [ "$p" = / ] && return 0
        p=$(dirname "$p")
    done
}

# A checkout they cannot reach (in a 0700 home directory, say) keeps the
# run's data in /var/tmp/corelog-run-<checksum of the checkout's path>
# instead, and .run is a link to it (make distclean removes both).
if [ ${#as_pg[@]} -gt 0 ] && ! world_traversable "$top"; then
    away=/var/tmp/corelog-run-$(printf '%s' "$top" | cksum | cut -d ' ' -f 1)
    if [ ! -L "$run" ]; then
        if [ -L "$away" ] || { [ -e "$away" ] && [ ! -O "$away" ]; }; then
            die "$away is not root's own directory; remove it"
        fi
        [ -d "$away" ] || mkdir -m 0755 "$away"
        if [ -d "$run" ]; then
            # an earlier run's data (its cluster unreachable from here)
            cp -a "$run/." "$away/"
            rm -rf "$run"
        fi
        ln -s "$away" "$run"
    fi
    echo "run: $top is not reachable by the postgres user and nginx's" \
         "workers: the run's data is in $(readlink "$run") (.run links to it)"
    run=$(readlink -f "$run")
    pgdata=$run/pgdata
    pglog=$run/postgres.log
fi

mkdir -p "$run"

# Processes left behind by an interrupted `make run`.
if [ -f "$run/nginx.pid" ] && kill -0 "$(cat "$run/nginx.pid")" 2>/dev/null; then
    echo "run: stopping the nginx of a previous run"
    kill -QUIT "$(cat "$run/nginx.pid")" || true
    for _ in $(seq 50); do [ -f "$run/nginx.pid" ] || break; sleep 0.1; done
fi
if [ -d "$pgdata" ] && pg_ctl status >/dev/null 2>&1; then
    echo "run: stopping the PostgreSQL of a previous run"
    pg_ctl -m fast -w stop >/dev/null
fi

port_free "$PORT" ||
    die "port $PORT (nginx) is in use; stop what listens there or use PORT=<port>"
port_free "$STATUS_PORT" ||
    die "port $STATUS_PORT (status) is in use; stop what listens there or use STATUS_PORT=<port>"
port_free "$PGPORT" ||
    die "port $PGPORT (PostgreSQL) is in use; stop what listens there or use PGPORT=<port>"

if [ ${#as_pg[@]} -gt 0 ] && ! "${as_pg[@]}" test -x "$run"; then
    die "the postgres user cannot reach $run (mode of a directory above it)"
fi

# A new cluster on the first run (trust auth: a private dev cluster).
if [ ! -d "$pgdata" ]; then
    echo "run: creating the PostgreSQL cluster in $pgdata"
    mkdir -m 0700 "$pgdata"
    [ ${#as_pg[@]} -eq 0 ] || chown postgres: "$pgdata"
    if ! "${as_pg[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust \
            -E UTF8 --locale=C >"$run/initdb.log" 2>&1; then
        cat "$run/initdb.log" >&2
        rm -rf "$pgdata"
        die "initdb failed"
    fi
    echo "include_if_exists = 'corelog-run.conf'" >>"$pgdata/postgresql.conf"
fi

# Rewritten every run, so that PGPORT can change.
cat >"$pgdata/corelog-run.conf" <<EOF
# written by scripts/run.sh
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$run/socket'
shared_preload_libraries = 'pg_stat_statements'
EOF
touch "$pglog"
mkdir -p "$run/socket"
if [ ${#as_pg[@]} -gt 0 ]; then
    chown postgres: "$pgdata/corelog-run.conf" "$pglog" "$run/socket"
fi

nginx_pid=
pg_started=

# shellcheck disable=SC2317  # (invoked by the trap)
cleanup() {
    # Ignore further INT/TERM while stopping: `make` passes its own SIGTERM
    # on to this script, so a TERM sent to the whole process group (for
    # example by `timeout`) arrives twice, and the second one would
    # otherwise end the script before PostgreSQL is stopped.
    trap - EXIT
    trap '' INT TERM
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        echo "run: stopping nginx"
        kill -QUIT "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    if [ -n "$pg_started" ]; then
        echo "run: stopping PostgreSQL"
        pg_ctl -m fast -w stop >/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! pg_ctl -l "$pglog" -w -t 60 start >/dev/null; then
    tail -n 20 "$pglog" >&2
    die "PostgreSQL did not start (log: $pglog)"
fi
pg_started=1

# Database, schema (the migrations not applied yet), demo data.
if [ -z "$("$psql" -X -tA -d "$admin_conninfo" \
        -c "SELECT 1 FROM pg_database WHERE datname = 'corelog'")" ]; then
    "$psql" -X -q -d "$admin_conninfo" -c 'CREATE DATABASE corelog'
fi
PSQL=$psql "$top/scripts/migrate.sh" "$conninfo"

# The demo account, traffic source, core pathname, channel, log group and
# log stream are created once; each run adds a new request and response
# (each can have only one core log), a new token, and picks a new logtank
# resource id (a project has one logtank per resource).
demo=$(sql -tA -F ' ' <<'EOF'
INSERT INTO corelog.accounts (name)
SELECT 'demo'
 WHERE NOT EXISTS (SELECT 1 FROM corelog.accounts WHERE name = 'demo');

INSERT INTO corelog.traffic_sources (account_id, name)
SELECT a.id, 'demo'
  FROM corelog.accounts a
 WHERE a.name = 'demo'
   AND NOT EXISTS (SELECT 1 FROM corelog.traffic_sources t
                    WHERE t.account_id = a.id AND t.name = 'demo');

INSERT INTO corelog.core_pathnames (traffic_source_id, pathname)
SELECT t.id, '/demo'
  FROM corelog.traffic_sources t JOIN corelog.accounts a ON a.id = t.account_id
 WHERE a.name = 'demo' AND t.name = 'demo'
   AND NOT EXISTS (SELECT 1 FROM corelog.core_pathnames p
                    WHERE p.traffic_source_id = t.id);

INSERT INTO corelog.channels (account_id, name)
SELECT a.id, 'demo'
  FROM corelog.accounts a
 WHERE a.name = 'demo'
   AND NOT EXISTS (SELECT 1 FROM corelog.channels c
                    WHERE c.account_id = a.id AND c.name = 'demo');

INSERT INTO corelog.log_groups (account_id, project_id, name)
SELECT a.id, 'demo-project', 'demo'
  FROM corelog.accounts a
 WHERE a.name = 'demo'
   AND NOT EXISTS (SELECT 1 FROM corelog.log_groups g
                    WHERE g.account_id = a.id
                      AND g.project_id = 'demo-project' AND g.name = 'demo');

INSERT INTO corelog.log_streams (log_group_id, name)
SELECT g.id, 'demo'
  FROM corelog.log_groups g JOIN corelog.accounts a ON a.id = g.account_id
 WHERE a.name = 'demo' AND g.project_id = 'demo-project' AND g.name = 'demo'
   AND NOT EXISTS (SELECT 1 FROM corelog.log_streams s
                    WHERE s.log_group_id = g.id AND s.name = 'demo');

WITH a AS (SELECT id FROM corelog.accounts WHERE name = 'demo'
            ORDER BY created_at, id LIMIT 1),
     c AS (SELECT c.id FROM corelog.channels c, a
            WHERE c.account_id = a.id AND c.name = 'demo'
            ORDER BY c.created_at, c.id LIMIT 1),
     t AS (SELECT t.id FROM corelog.traffic_sources t, a
            WHERE t.account_id = a.id AND t.name = 'demo'
            ORDER BY t.created_at, t.id LIMIT 1),
     p AS (SELECT p.id FROM corelog.core_pathnames p, t
            WHERE p.traffic_source_id = t.id
            ORDER BY p.created_at, p.id LIMIT 1),
     g AS (SELECT g.id FROM corelog.log_groups g, a
            WHERE g.account_id = a.id AND g.project_id = 'demo-project'
              AND g.name = 'demo'
            ORDER BY g.created_at, g.id LIMIT 1),
     s AS (SELECT s.id FROM corelog.log_streams s, g
            WHERE s.log_group_id = g.id AND s.name = 'demo'
            ORDER BY s.created_at, s.id LIMIT 1),
     rq AS (INSERT INTO corelog.requests (traffic_source_id, method, url)
            SELECT id, 'GET', '/demo' FROM t RETURNING id),
     rs AS (INSERT INTO corelog.responses (traffic_source_id, status)
            SELECT id, 200 FROM t RETURNING id)
SELECT t.id, p.id, rq.id, rs.id, c.id, g.id, s.id,
       'demo-' || gen_random_uuid(),
       corelog.create_token(a.id, 'demo-domain', 'demo-project', NULL,
                            'make run demo')
  FROM a, t, p, rq, rs, c, g, s;
EOF
)
read -r ts_id pathname_id request_id response_id channel_id group_id \
    stream_id resource_id token <<<"$demo"
[ -n "${token:-}" ] || die "seeding the demo data failed"

# .run/nginx.conf: the shipped configuration with the @...@ values, plus
# temp paths inside .run/ (so that this also works when not root).
MODULE=$module PORT=$PORT STATUS_PORT=$STATUS_PORT CONNINFO=$conninfo \
TMPDIR_NGX=$run/tmp perl -pe '
    s/\@MODULE\@/$ENV{MODULE}/g;
    s/\@PORT\@/$ENV{PORT}/g;
    s/\@STATUS_PORT\@/$ENV{STATUS_PORT}/g;
    s/\@CONNINFO\@/$ENV{CONNINFO}/g;
    $_ .= join "", map { "    ${_}_temp_path \"$ENV{TMPDIR_NGX}/$_\";\n" }
                   qw(client_body proxy fastcgi uwsgi scgi)
        if /^http\s*\{/;
' "$top/conf/nginx.conf" >"$run/nginx.conf"
mkdir -p "$run/tmp"

"$nginx" -p "$run/" -c "$run/nginx.conf" -e stderr -g 'daemon off;' &
nginx_pid=$!

# Wait until nginx accepts connections (or has died).
for _ in $(seq 100); do
    kill -0 "$nginx_pid" 2>/dev/null || break
    ! port_free "$PORT" && break
    sleep 0.1
done
if ! kill -0 "$nginx_pid" 2>/dev/null; then
    wait "$nginx_pid" || true
    nginx_pid=
    die "nginx failed to start (configuration: $run/nginx.conf)"
fi

body=$(printf '{"status":200,"method":"get","elapsedTime":12.5,"corePathnameId":"%s","requestId":"%s","responseId":"%s"}' \
    "$pathname_id" "$request_id" "$response_id")

cat <<EOF

corelog is running; Ctrl-C stops nginx and PostgreSQL.

  nginx       http://127.0.0.1:$PORT/  (config $run/nginx.conf)
  status      curl -sS http://127.0.0.1:$STATUS_PORT/status  (?format=prometheus)
  PostgreSQL  $conninfo
              data $pgdata, log $pglog
              psql "$conninfo"
  demo token  $token

Create a core log (the request and response are new on every run):

  curl -sS -i -X POST http://127.0.0.1:$PORT/core-log/$ts_id -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' -d '$body'

Post a log to the demo channel (answers 202 {}):

  curl -sS -i -X POST http://127.0.0.1:$PORT/api/v1/log/create -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' -d '{"channel_id":"$channel_id","label":"Signed in","reference":"user-1","type":"success","tags":"auth,web"}'

Create a logtank in project demo-project (the resource id is new on every run):

  curl -sS -i -X POST http://127.0.0.1:$PORT/v1/logtanks -H 'X-Auth-Token: $token' -H 'Content-Type: application/json' -d '{"logtank":{"resource_type":"LISTENER","resource_id":"$resource_id","log_group_id":"$group_id","log_stream_id":"$stream_id"}}'

EOF

status=0
wait "$nginx_pid" || status=$?
nginx_pid=
echo "run: nginx exited (status $status)" >&2
exit "$status"
