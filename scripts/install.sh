#!/bin/bash
# Build ngx_http_corelog_module for an nginx that is installed already
# (Debian/Ubuntu's package, nginx.org's packages, the official image, a
# source-built nginx), check that it loads into that nginx, and install it.
#
#   scripts/install.sh [--nginx PATH] [--source DIR|FILE.tar.gz] [--download]
#                      [--builddir DIR] [--build-only]
#
#   --nginx PATH    the target nginx (default: nginx on PATH, else
#                   /usr/sbin/nginx); its `nginx -V` gives the version and
#                   the configure arguments the module is built with
#   --source X      an nginx source tree, or a tarball: nginx.org's release
#                   (./configure) or a release tag of nginx's repository
#                   (auto/configure).  Default, the first that exists:
#                   Debian's nginx-dev tree (/usr/share/nginx/src) when its
#                   version is the target's, $NGINX_TARBALLS/nginx-X.Y.Z.tar.gz
#                   (default ../shared/nginx beside this repository), with
#                   --download nginx.org's nginx-X.Y.Z.tar.gz (curl)
#   --builddir DIR  nginx's build directory (default
#                   .build/install/X.Y.Z/objs); a tarball is unpacked and
#                   downloads are kept in DIR's parent
#   --build-only    build and check the load only; print the .so's path on
#                   stdout, install nothing (the Dockerfile)
#
# The source's version (src/core/nginx.h) must be the target's: otherwise
# it stops before building, exit status 2, and installs nothing.  The
# module is configured with the target's arguments, less --add-module=,
# --add-dynamic-module= (paths of the package's own build), --builddir=
# and --with-*=dynamic (other modules, with libraries of their own), plus
# --add-dynamic-module=<this repository>; Debian's nginx-dev tree with its
# own conf_flags instead.  A target built --with-compat loads modules built
# --with-compat from the same version's source; one built without it only
# modules built with exactly its arguments, so --with-compat is not added
# then.  Before installing, the target nginx itself tests a configuration
# that loads the module (nginx -t, a throwaway prefix).
#
# Installs (under $DESTDIR when set): the .so with `install -D -m 0644`
# into the target's --modules-path (else <prefix>/modules); when its
# nginx.conf includes modules-enabled/*.conf (Debian, Ubuntu),
# <conf dir>/modules-enabled/50-mod-http-corelog.conf with the load_module
# line, else it prints the line to add; and an inactive example,
# <conf dir>/conf.d/corelog.conf.example.  It never edits nginx.conf and
# never installs packages: when a header is missing it names the Debian
# package.  Exit status: 0 done, 1 failed, 2 the source does not match.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
debian_src=/usr/share/nginx/src
so_name=ngx_http_corelog_module.so

say() { echo "install: $*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit "${1:-0}"
}

nginx_bin=
source_arg=
builddir=
download=
build_only=

while [ $# -gt 0 ]; do
    case $1 in
        --nginx) nginx_bin=${2:?--nginx needs a path}; shift 2 ;;
        --nginx=*) nginx_bin=${1#*=}; shift ;;
        --source) source_arg=${2:?--source needs a path}; shift 2 ;;
        --source=*) source_arg=${1#*=}; shift ;;
        --builddir) builddir=${2:?--builddir needs a path}; shift 2 ;;
        --builddir=*) builddir=${1#*=}; shift ;;
        --download) download=1; shift ;;
        --build-only) build_only=1; shift ;;
        -h|--help) usage 0 ;;
        *) say "unknown argument: $1 (see --help)"; exit 1 ;;
    esac
done

# --- the target nginx: version and configure arguments ----------------------
if [ -z "$nginx_bin" ]; then
    nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
fi
[ -x "$nginx_bin" ] || nginx_bin=$(command -v "$nginx_bin" 2>/dev/null) ||
    die "no nginx at ${nginx_bin:-/usr/sbin/nginx}: name it with --nginx PATH"

info=$("$nginx_bin" -V 2>&1) || die "$nginx_bin -V failed: $info"
version=$(sed -n 's|^nginx version: [^/]*/\([0-9][0-9.]*\).*|\1|p' <<<"$info")
[ -n "$version" ] || die "$nginx_bin -V prints no nginx version: $info"
conf_line=$(sed -n 's/^configure arguments: //p' <<<"$info")

# nginx prints the arguments as the shell gave them, values with spaces in
# single quotes: the shell's own quoting reads them back.
eval "set -- $conf_line"

args=()
dropped=()
compat=
prefix=/usr/local/nginx
modules_path=
conf_path=
cc_opt=
ld_opt=
for a in "$@"; do
    case $a in
        --add-module=*|--add-dynamic-module=*|--builddir=*|--with-*=dynamic)
            dropped+=("$a"); continue ;;
        --with-openssl=*|--with-pcre=*|--with-zlib=*|--with-libatomic=*)
            # a library's source tree of that build: the system's otherwise
            if [ ! -d "${a#*=}" ]; then dropped+=("$a"); continue; fi ;;
        --with-compat) compat=1 ;;
        --prefix=*) prefix=${a#*=} ;;
        --modules-path=*) modules_path=${a#*=} ;;
        --conf-path=*) conf_path=${a#*=} ;;
        --with-cc-opt=*) cc_opt=${a#*=} ;;
        --with-ld-opt=*) ld_opt=${a#*=} ;;
    esac
    args+=("$a")
done

# nginx's paths: relative ones are relative to the prefix
under_prefix() { case $1 in /*) echo "$1" ;; *) echo "${prefix%/}/$1" ;; esac; }
modules_path=$(under_prefix "${modules_path:-modules}")
conf_path=$(under_prefix "${conf_path:-conf/nginx.conf}")
conf_dir=$(dirname "$conf_path")

say "target: $nginx_bin, nginx $version${compat:+, --with-compat}"
if [ ${#dropped[@]} -gt 0 ]; then
    say "not passed to configure: ${dropped[*]}"
fi
if [ -z "$compat" ]; then
    say "$nginx_bin was built without --with-compat: the module is built" \
        "with exactly its arguments (a module built --with-compat would not" \
        "load into it)"
fi

# --- the source: a tree or a tarball of exactly that version -----------------
builddir=$(realpath -m "${builddir:-$top/.build/install/$version/objs}")
work=$(dirname "$builddir")
tarballs=${NGINX_TARBALLS:-$top/../shared/nginx}

header_version() {
    sed -n 's/^#define NGINX_VERSION *"\([^"]*\)".*/\1/p'
}

# the version of a tree or a tarball, without unpacking the tarball
source_version() {
    if [ -d "$1" ]; then
        [ -f "$1/src/core/nginx.h" ] || return 1
        header_version <"$1/src/core/nginx.h"
    else
        tar -xzOf "$1" --wildcards --no-anchored 'src/core/nginx.h' \
            2>/dev/null | header_version
    fi
}

src=
if [ -n "$source_arg" ]; then
    src=$(realpath -m "$source_arg")
    [ -e "$src" ] || die "--source $source_arg: no such file or directory"
elif [ "$(source_version "$debian_src" 2>/dev/null)" = "$version" ]; then
    src=$debian_src
elif [ -f "$tarballs/nginx-$version.tar.gz" ]; then
    src=$(realpath "$tarballs/nginx-$version.tar.gz")
elif [ -n "$download" ]; then
    url=https://nginx.org/download/nginx-$version.tar.gz
    mkdir -p "$work"
    say "downloading $url"
    curl -fsSL -o "$work/nginx-$version.tar.gz.part" "$url" ||
        die "could not download $url"
    mv "$work/nginx-$version.tar.gz.part" "$work/nginx-$version.tar.gz"
    src=$work/nginx-$version.tar.gz
else
    say "no source of nginx $version: get" \
        "https://nginx.org/download/nginx-$version.tar.gz and pass it with" \
        "--source nginx-$version.tar.gz (or put it in $tarballs, or rerun" \
        "with --download)${compat:+; on Debian/Ubuntu \`apt-get install" \
        "nginx-dev\` installs the tree when its version is $version}"
    exit 1
fi

src_version=$(source_version "$src" || true)
[ -n "$src_version" ] ||
    die "$src is not an nginx source tree or tarball (no src/core/nginx.h)"
if [ "$src_version" != "$version" ]; then
    say "nginx source $src_version ($src) does not match the target nginx" \
        "$version ($nginx_bin): a module built from it would not load" \
        "(\"module ... version ... instead of ...\"); give --source the" \
        "nginx-$version source"
    exit 2
fi
say "source: $src (nginx $src_version)"

# --- what the build needs (installs nothing) ---------------------------------
# The headers nginx's configure and the module's config look for, each with
# its Debian package (pcre2.h wants its code unit width defined).
cc=${CC:-cc}
missing=()
packages=()
if ! command -v "$cc" >/dev/null 2>&1; then
    missing+=("the C compiler $cc (package gcc)")
    packages+=(gcc)
else
    pg_inc=$(pg_config --includedir 2>/dev/null \
             || pkg-config --variable=includedir libpq 2>/dev/null || true)
    for need in libpq-fe.h:libpq-dev jansson.h:libjansson-dev \
                openssl/evp.h:libssl-dev pcre2.h:libpcre2-dev zlib.h:zlib1g-dev
    do
        printf '#define PCRE2_CODE_UNIT_WIDTH 8\n#include <%s>\n' \
            "${need%%:*}" | "$cc" -E -x c ${pg_inc:+"-I$pg_inc"} - \
            >/dev/null 2>&1 || {
            missing+=("the header ${need%%:*} (package ${need#*:})")
            packages+=("${need#*:}"); }
    done
fi
command -v make >/dev/null 2>&1 || { missing+=("make (package make)")
                                     packages+=(make); }
if [ ${#missing[@]} -gt 0 ]; then
    printf 'install: missing %s\n' "${missing[@]}" >&2
    say "\`apt-get install ${packages[*]}\` installs them (or, on Debian" \
        "bookworm, \`make deps\`, which installs all the project needs);" \
        "this script installs no packages"
    exit 1
fi

# --- unpack a tarball --------------------------------------------------------
if [ -f "$src" ]; then
    tree=$work/nginx-$version
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$tree.tmp"
    tar -xzf "$src" -C "$tree.tmp"
    inner=$(find "$tree.tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
    mv "$inner" "$tree"
    rm -rf "$tree.tmp"
    src=$tree
fi
# a release tag of nginx's repository has auto/configure only
if [ ! -e "$src/configure" ] && [ -x "$src/auto/configure" ]; then
    printf '#!/bin/sh\nexec auto/configure "$@"\n' >"$src/configure"
    chmod +x "$src/configure"
fi
[ -x "$src/configure" ] || die "$src has no configure script"

# --- configure (when the arguments changed) and make -------------------------
if [ -f "$src/conf_flags" ]; then
    # Debian's nginx-dev: the flags Debian documents for module builds
    NGX_CONF_FLAGS=()
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    args=(${cc_opt:+"--with-cc-opt=$cc_opt"} ${ld_opt:+"--with-ld-opt=$ld_opt"}
          "${NGX_CONF_FLAGS[@]}")
fi
# paths without ".S" for configure (scripts/safe-path.sh)
# shellcheck source=scripts/safe-path.sh
. "$top/scripts/safe-path.sh"
args+=("--add-dynamic-module=$(safe_path "$top")"
       "--builddir=$(safe_path "$builddir")")

stamp=$builddir/.configured
want=$(printf '%s\n' "$src" "${args[@]}")
if [ ! -f "$stamp" ] || [ "$top/config" -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$want" ]; then
    say "configuring in $builddir (configure.log)"
    rm -rf "$builddir"
    mkdir -p "$builddir"
    (cd "$src" && ./configure "${args[@]}") >"$builddir/configure.log" 2>&1 || {
        tail -25 "$builddir/configure.log" >&2
        die "configure failed ($builddir/configure.log): a library it" \
            "names is missing (\`make deps\` or apt-get installs the -dev" \
            "package), or an argument of $nginx_bin -V needs a source tree" \
            "this machine lacks"; }
    printf '%s\n' "$want" >"$stamp"
fi

say "building the module (make.log)"
make -j"$(nproc 2>/dev/null || echo 2)" -C "$src" -f "$builddir/Makefile" \
    modules >"$builddir/make.log" 2>&1 || {
        tail -40 "$builddir/make.log" >&2
        die "make failed ($builddir/make.log)"; }
so=$builddir/$so_name
[ -f "$so" ] || die "make built no $so"

# --- does it load into the target? -------------------------------------------
check=$(mktemp -d "${TMPDIR:-/tmp}/corelog-install.XXXXXX")
trap 'rm -rf "$check"' EXIT

user_line=
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    # as root nginx looks up its worker user (--user=nginx, nobody...)
    user_line="user nobody $(id -gn nobody);"
fi
temp_paths="client_body_temp_path $check/client_body;"
for m in proxy fastcgi uwsgi scgi; do
    case " $conf_line " in
        *" --without-http_${m}_module "*) ;;
        *) temp_paths+=" ${m}_temp_path $check/$m;" ;;
    esac
done
cat >"$check/nginx.conf" <<EOF
load_module $so;
$user_line
error_log stderr;
pid $check/nginx.pid;
events { }
http {
    access_log off;
    $temp_paths
    corelog_postgres "host=127.0.0.1 dbname=x";
}
EOF

if ! out=$("$nginx_bin" -p "$check/" -c "$check/nginx.conf" -e stderr -t 2>&1)
then
    printf '%s\n' "$out" >&2
    case $out in
        *"not binary compatible"*)
            why="the module was built with configure arguments that do not
match the target's (--with-compat on one side only, or a patched nginx)" ;;
        *"instead of"*)
            why="the module was built from another nginx version's source" ;;
        *"cannot open shared object"*|*"undefined symbol"*)
            why="a library the module links is missing at run time: install
libpq5, libjansson4 and libssl3 (libssl3t64 on Debian 13)" ;;
        *) why="see nginx's message above" ;;
    esac
    die "the module does not load into $nginx_bin, nothing installed:" \
        "$(tr '\n' ' ' <<<"$why")"
fi
say "$nginx_bin loads $so: ok"

if [ -n "$build_only" ]; then
    echo "$so"
    exit 0
fi

# --- install -----------------------------------------------------------------
destdir=${DESTDIR:-}
dest_so=$modules_path/$so_name
install -D -m 0644 "$so" "$destdir$dest_so"
say "installed $destdir$dest_so"

load_line="load_module $dest_so;"
conf_file=$destdir$conf_path
[ -f "$conf_file" ] || conf_file=$conf_path

if [ -f "$conf_file" ] &&
   grep -Eq '^[[:space:]]*include[[:space:]]+[^;]*modules-enabled/\*\.conf' \
       "$conf_file"; then
    enabled=$conf_dir/modules-enabled/50-mod-http-corelog.conf
    printf '%s\n' "$load_line" >"$check/50-mod-http-corelog.conf"
    install -D -m 0644 "$check/50-mod-http-corelog.conf" "$destdir$enabled"
    say "installed $destdir$enabled ($conf_path includes modules-enabled/)"
    load_step="  (the module is loaded by $enabled)"
else
    load_step="  add at the top of $conf_path, outside any block:

      $load_line"
fi

example=$conf_dir/conf.d/corelog.conf.example
cat >"$check/corelog.conf.example" <<EOF
# ngx_http_corelog_module: a minimal configuration (inside http{}: nginx.conf
# includes conf.d/*.conf there).  Rename to corelog.conf to enable it; the
# shipped conf/nginx.conf of the repository adds rate limits and JSON error
# pages for the logtank route.

corelog_postgres "host=127.0.0.1 dbname=corelog user=corelog_nginx passfile=$conf_dir/corelog.pgpass";

server {
    listen 8080;

    # Bodies stay in memory: the largest body a route accepts is ~175 KB.
    client_max_body_size    256k;
    client_body_buffer_size 256k;

    # nginx's own errors (400, 404, 413 ...) as JSON too.
    error_page 400 404 405 411 413 414 415 429 494 500 502 503 504
               /_corelog/error;

    location = /_corelog/error {
        internal;
        corelog_error core_log;
    }

    location = /api/v1/log/create {
        corelog_auth_request /_corelog/auth/bearer;
        corelog_api channel_log;
    }

    location = /_corelog/auth/bearer {
        internal;
        corelog_token_check bearer;
    }
}
EOF
install -D -m 0644 "$check/corelog.conf.example" "$destdir$example"
say "installed $destdir$example"

cat >&2 <<EOF

Next steps:
1. The database (PostgreSQL 13 or newer): apply the schema with
   scripts/migrate.sh "host=... dbname=corelog user=..." and create a role
   for nginx (docs/operations.md, "A least-privilege role").
2. The module:
$load_step
3. The routes: edit $example (conninfo, password file, port)
   and rename it to corelog.conf.
4. nginx -t && systemctl reload nginx
EOF
