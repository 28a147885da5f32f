#!/bin/bash
# Build objs/ngx_http_corelog_module.so against an nginx source tree
# (default: Debian's nginx-dev tree, which matches /usr/sbin/nginx).
# CORELOG_MODULE_DIR and CORELOG_OBJS build another copy of the module
# into another directory (scripts/mutate.sh: its mutants' tree).
#
# Installs nothing: when the nginx source tree, the compiler or a library's
# headers are missing, it says which (and the Debian package) and that
# `make deps` installs them, and exits 1.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
debian_src=/usr/share/nginx/src
src=${NGINX_SRC:-$debian_src}
objs=${CORELOG_OBJS:-$top/objs}
top=${CORELOG_MODULE_DIR:-$top}
stamp=$objs/.configured
cc=${CC:-cc}

# --- what the build needs --------------------------------------------------
missing=()
have_header() {
    printf '#include <%s>\n' "$1" \
        | "$cc" -E -x c ${2:+"-I$2"} - >/dev/null 2>&1
}

if [ ! -x "$src/configure" ] && [ "$src" = "$debian_src" ]; then
    missing+=("the nginx source tree in $src (package nginx-dev)")
elif [ ! -x "$src/configure" ]; then
    echo "build: NGINX_SRC=$src is not an nginx source tree (no" \
         "configure); unset NGINX_SRC for Debian's ($debian_src)" >&2
    exit 1
fi
if ! command -v "$cc" >/dev/null 2>&1; then
    missing+=("the C compiler $cc (package gcc)")
else
    pg_inc=$(pg_config --includedir 2>/dev/null \
             || pkg-config --variable=includedir libpq 2>/dev/null || true)
    have_header libpq-fe.h "$pg_inc" ||
        missing+=("libpq's header libpq-fe.h (package libpq-dev)")
    have_header jansson.h ||
        missing+=("jansson's header jansson.h (package libjansson-dev)")
    have_header openssl/evp.h ||
        missing+=("OpenSSL's header openssl/evp.h (package libssl-dev)")
fi

if [ ${#missing[@]} -gt 0 ]; then
    printf 'build: missing %s\n' "${missing[@]}" >&2
    echo "build: \`make deps\` installs what is missing (Debian bookworm)" >&2
    exit 1
fi

# --- configure (when needed) and make ---------------------------------------
# shellcheck source=scripts/safe-path.sh
. "$(dirname "$0")/safe-path.sh"

cd "$src"

# configure again when config changed or another nginx tree is named
if [ ! -f "$stamp" ] || [ "$top/config" -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$src" ]; then
    rm -rf "$objs"
    mkdir -p "$objs"
    safe_top=$(safe_path "$top")
    safe_objs=$(safe_path "$objs")
    if [ -f ./conf_flags ]; then
        # shellcheck disable=SC1091
        . ./conf_flags
    else
        NGX_CONF_FLAGS="--with-compat"
    fi
    # shellcheck disable=SC2068
    ./configure --with-cc-opt="-fPIC -g -O2 -Wall -Werror" \
        --with-ld-opt="-fPIC" ${NGX_CONF_FLAGS[@]+"${NGX_CONF_FLAGS[@]}"} \
        --add-dynamic-module="$safe_top" --builddir="$safe_objs" \
        > "$objs/configure.log" 2>&1 || {
            cat "$objs/configure.log"; exit 1; }
    echo "$src" > "$stamp"
fi

make -s -f "$objs/Makefile" -C "$src" modules
ls -l "$objs/ngx_http_corelog_module.so"
