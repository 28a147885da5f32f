#!/bin/sh
# Container entry point: generate the nginx configuration from the shipped
# conf/nginx.conf (installed as /usr/share/corelog/nginx.conf) and run nginx
# in the foreground.  The schema migrations sql/ and scripts/migrate.sh are
# installed under /usr/share/corelog/ as in the repository.
#
#   corelog-entrypoint                 configure, then exec nginx
#   corelog-entrypoint migrate         apply the migrations the database
#                                      lacks (scripts/migrate.sh), then exit
#   corelog-entrypoint --config-only   write the configuration (and the
#                                      password file), print its path, exit:
#                                      the image's build runs nginx -t on it
#
#   CORELOG_CONNINFO       libpq conninfo of the database (required), without
#                          the password, e.g. "host=postgres dbname=corelog
#                          user=corelog"; no double quote
#   CORELOG_PASSWORD_FILE  a file holding the password (a Docker/compose
#                          secret: /run/secrets/...; trailing newlines are
#                          dropped).  It is written into a libpq password
#                          file, <prefix>/pgpass ("*:*:*:*:<password>", ':'
#                          and '\' escaped), owned by CORELOG_USER, mode 0600
#                          (libpq ignores one that others may read), and
#                          "passfile=<prefix>/pgpass" is added to the
#                          conninfo: the password is never in the
#                          environment, the command line or nginx.conf
#   CORELOG_USER           nginx's worker user (default nginx, the official
#                          image's); as root, nginx.conf gets "user <it>
#                          <its group>;" and the password file is its
#   PORT                   HTTP port (default 8080)
#   STATUS_PORT            the status endpoint's port (default 8081), on
#                          127.0.0.1 only: read it inside the container
#   CORELOG_LISTEN         listen address (default 0.0.0.0: the shipped file
#                          listens on 127.0.0.1, useless inside a container)
#   CORELOG_INIT_SCHEMA    1: apply the migrations before starting nginx (one
#                          container; with compose, the migrate service does)
#
# Paths, for a test or another layout: CORELOG_PREFIX (nginx's prefix: the
# generated files, the pid file and the temporary directories, default
# /run/corelog: nothing else is written), CORELOG_SHARE (default
# /usr/share/corelog), CORELOG_MODULE (default
# /usr/lib/nginx/modules/ngx_http_corelog_module.so), NGINX (default nginx).
set -eu

mode=${1:-run}
case $mode in
    run|migrate|--config-only) ;;
    *) echo "usage: $0 [migrate | --config-only]" >&2
       exit 1 ;;
esac

: "${CORELOG_CONNINFO:?set CORELOG_CONNINFO to the PostgreSQL conninfo}"
PORT=${PORT:-8080}
STATUS_PORT=${STATUS_PORT:-8081}
listen=${CORELOG_LISTEN:-0.0.0.0}
share=${CORELOG_SHARE:-/usr/share/corelog}
module=${CORELOG_MODULE:-/usr/lib/nginx/modules/ngx_http_corelog_module.so}
prefix=${CORELOG_PREFIX:-/run/corelog}
nginx=${NGINX:-nginx}
user=${CORELOG_USER:-nginx}
conninfo=$CORELOG_CONNINFO

die() { echo "corelog-entrypoint: $*" >&2; exit 1; }

case $conninfo in
    *'"'*) die "CORELOG_CONNINFO must not contain a double quote" ;;
esac
case $conninfo in
    *password=*) echo "corelog-entrypoint: CORELOG_CONNINFO holds a password;" \
                      "CORELOG_PASSWORD_FILE keeps it out of the environment" >&2 ;;
esac

mkdir -p "$prefix"

# --- the password: a libpq password file for the workers --------------------
group=
if [ "$(id -u)" = 0 ]; then
    group=$(id -gn "$user" 2>/dev/null) ||
        die "no user $user (CORELOG_USER) for nginx's workers"
fi

if [ -n "${CORELOG_PASSWORD_FILE:-}" ]; then
    [ -r "$CORELOG_PASSWORD_FILE" ] ||
        die "CORELOG_PASSWORD_FILE: cannot read $CORELOG_PASSWORD_FILE"
    password=$(cat "$CORELOG_PASSWORD_FILE")
    [ -n "$password" ] || die "$CORELOG_PASSWORD_FILE is empty"
    case $password in
        *'
'*) die "$CORELOG_PASSWORD_FILE: a password of more than one line" ;;
    esac
    passfile=$prefix/pgpass
    rm -f "$passfile"
    (umask 077 &&
     printf '*:*:*:*:%s\n' "$(printf '%s' "$password" |
                              sed -e 's/[\\:]/\\&/g')" >"$passfile")
    [ -z "$group" ] || chown "$user:$group" "$passfile"
    chmod 0600 "$passfile"
    unset password

    # a conninfo value in single quotes: \ and ' escaped
    value=$(printf '%s' "$passfile" | sed -e "s/[\\\\']/\\\\&/g")
    case $conninfo in
        postgres://*\?*|postgresql://*\?*) conninfo="$conninfo&passfile=$passfile" ;;
        postgres://*|postgresql://*) conninfo="$conninfo?passfile=$passfile" ;;
        *) conninfo="$conninfo passfile='$value'" ;;
    esac
fi

if [ "$mode" = migrate ] || [ "${CORELOG_INIT_SCHEMA:-0}" = 1 ]; then
    "$share/scripts/migrate.sh" "$conninfo"
    [ "$mode" != migrate ] || exit 0
fi

# --- nginx.conf ---------------------------------------------------------------
# Quote a value for the replacement side of sed's s|...|...|.
sed_quote() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

user_line=
[ -z "$group" ] || user_line="user $user $group;"

sed -e "s|127\.0\.0\.1:@PORT@|$(sed_quote "$listen"):@PORT@|" \
    -e "s|@PORT@|$(sed_quote "$PORT")|g" \
    -e "s|@STATUS_PORT@|$(sed_quote "$STATUS_PORT")|g" \
    -e "s|@MODULE@|$(sed_quote "$module")|g" \
    -e "s|@CONNINFO@|$(sed_quote "$conninfo")|g" \
    "$share/nginx.conf" >"$prefix/nginx.conf.tmp"
if [ -n "$user_line" ]; then
    sed -i -e "/^load_module /a $user_line" "$prefix/nginx.conf.tmp"
fi
# nginx's temporary directories under the prefix too (created by nginx, even
# by nginx -t): nothing outside it is written, and nginx -t of the build
# runs where the compiled-in /var/cache/nginx/ does not exist
temp=
for t in client_body proxy fastcgi uwsgi scgi; do
    temp="$temp ${t}_temp_path $(sed_quote "$prefix")/$t;"
done
sed -i -e "s|^http {\$|&\n   $temp|" "$prefix/nginx.conf.tmp"
mv "$prefix/nginx.conf.tmp" "$prefix/nginx.conf"

if [ "$mode" = --config-only ]; then
    echo "$prefix/nginx.conf"
    exit 0
fi

exec "$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -e stderr -g 'daemon off;'
