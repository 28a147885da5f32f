#!/bin/bash
# Build objs/ngx_http_corelog_module.so against an nginx source tree
# (default: Debian's nginx-dev tree, which matches /usr/sbin/nginx).
# CORELOG_MODULE_DIR and CORELOG_OBJS build another copy of the module
# into another directory (scripts/mutate.sh: its mutants' tree).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
src=${NGINX_SRC:-/usr/share/nginx/src}
objs=${CORELOG_OBJS:-$top/objs}
top=${CORELOG_MODULE_DIR:-$top}
stamp=$objs/.configured

cd "$src"

# configure again when config changed or another nginx tree is named
if [ ! -f "$stamp" ] || [ "$top/config" -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$src" ]; then
    rm -rf "$objs"
    mkdir -p "$objs"
    if [ -f ./conf_flags ]; then
        # shellcheck disable=SC1091
        . ./conf_flags
    else
        NGX_CONF_FLAGS="--with-compat"
    fi
    # shellcheck disable=SC2068
    ./configure --with-cc-opt="-fPIC -g -O2 -Wall -Werror" \
        --with-ld-opt="-fPIC" ${NGX_CONF_FLAGS[@]+"${NGX_CONF_FLAGS[@]}"} \
        --add-dynamic-module="$top" --builddir="$objs" \
        > "$objs/configure.log" 2>&1 || {
            cat "$objs/configure.log"; exit 1; }
    echo "$src" > "$stamp"
fi

make -s -f "$objs/Makefile" -C "$src" modules
ls -l "$objs/ngx_http_corelog_module.so"
