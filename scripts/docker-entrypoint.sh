#!/bin/sh
# Container entry point: generate the nginx configuration from the shipped
# conf/nginx.conf (installed as /usr/share/corelog/nginx.conf) and run nginx
# in the foreground.  The schema migrations sql/ and scripts/migrate.sh are
# installed under /usr/share/corelog/ as in the repository.
#
#   CORELOG_CONNINFO     libpq conninfo of the database (required), e.g.
#                        "host=db dbname=corelog user=corelog password=..."
#   PORT                 HTTP port (default 8080)
#   CORELOG_LISTEN       listen address (default 0.0.0.0: the shipped file
#                        listens on 127.0.0.1, useless inside a container)
#   CORELOG_INIT_SCHEMA  1: first apply the schema migrations that the
#                        database lacks (scripts/migrate.sh)
set -eu

: "${CORELOG_CONNINFO:?set CORELOG_CONNINFO to the PostgreSQL conninfo}"
PORT=${PORT:-8080}
listen=${CORELOG_LISTEN:-0.0.0.0}
share=/usr/share/corelog
module=/usr/lib/nginx/modules/ngx_http_corelog_module.so
prefix=/run/corelog

case $CORELOG_CONNINFO in
    *'"'*) echo "CORELOG_CONNINFO must not contain a double quote" >&2
           exit 1 ;;
esac

# Quote a value for the replacement side of sed's s|...|...|.
sed_quote() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

if [ "${CORELOG_INIT_SCHEMA:-0}" = 1 ]; then
    "$share/scripts/migrate.sh" "$CORELOG_CONNINFO"
fi

mkdir -p "$prefix"
sed -e "s|127\.0\.0\.1:@PORT@|$(sed_quote "$listen"):@PORT@|" \
    -e "s|@PORT@|$(sed_quote "$PORT")|g" \
    -e "s|@MODULE@|$module|g" \
    -e "s|@CONNINFO@|$(sed_quote "$CORELOG_CONNINFO")|g" \
    "$share/nginx.conf" >"$prefix/nginx.conf"

exec nginx -p "$prefix/" -c "$prefix/nginx.conf" -e stderr -g 'daemon off;'
