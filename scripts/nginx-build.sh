#!/bin/bash
# nginx itself and the module, built from a full nginx source tree into a
# directory of .build/; objs/ and `make build` are never touched.
#
#   scripts/nginx-build.sh BUILDDIR [CONFIGURE-ARG...]
#   scripts/nginx-build.sh --bare BUILDDIR CONFIGURE-ARG...
#
# `make debug-build` (which `make test` runs): .build/debug/ with no more
# than the arguments below, for t/013-debug-log.t; scripts/asan.sh:
# .build/asan/ with the sanitizers' compiler and linker options;
# scripts/fuzz.sh: .build/fuzz/, --bare.
#
# The tree is scripts/nginx-source.sh's (NGINX_VERSION, default the
# installed nginx's: 1.22.1 on bookworm).  configure gets the modules t/
# needs (--with-debug among them), then CONFIGURE-ARGs (--with-cc-opt...)
# and --add-dynamic-module=<this repository>; --bare, CONFIGURE-ARGs alone.
# Then --builddir=BUILDDIR.  configure runs again only when those arguments
# or ./config change, and make (the "binary" and "modules" targets)
# recompiles only what changed.  Logs: BUILDDIR/configure.log and
# BUILDDIR/make.log; messages start with BUILDDIR's name.  The packages it
# needs are scripts/deps.sh's.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

bare=
if [ "${1:-}" = --bare ]; then
    bare=1
    shift
fi

builddir=$(realpath -m "${1:?usage: nginx-build.sh [--bare] BUILDDIR [ARG...]}")
shift
name=$(basename "$builddir")

src=$("$top/scripts/nginx-source.sh" ${NGINX_VERSION:+"$NGINX_VERSION"})

# paths without ".S" for configure (scripts/safe-path.sh)
# shellcheck source=scripts/safe-path.sh
. "$top/scripts/safe-path.sh"
mkdir -p "$builddir"
safe_top=$(safe_path "$top")
safe_builddir=$(safe_path "$builddir")

if [ -n "$bare" ]; then
    conf_args=("$@")
else
    # What t/ needs of nginx (the harness's self-test uses sub_filter); the
    # Debian package's list minus the dynamic modules, mail and stream.
    conf_args=(--with-compat --with-debug --with-threads --with-pcre-jit
               --with-http_ssl_module --with-http_sub_module
               --with-http_auth_request_module --with-http_stub_status_module
               --with-http_v2_module --with-http_realip_module
               "$@" --add-dynamic-module="$safe_top")
fi
conf_args+=(--builddir="$safe_builddir")

stamp=$builddir/.configured
want=$(printf '%s\n' "$src" "${conf_args[@]}")

if [ ! -f "$stamp" ] || [ "$top/config" -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$want" ]; then
    echo "$name: configuring nginx ($src) in $builddir" >&2
    rm -rf "$builddir"
    mkdir -p "$builddir"
    (cd "$src" && ./configure "${conf_args[@]}") \
        >"$builddir/configure.log" 2>&1 || {
            tail -40 "$builddir/configure.log" >&2
            echo "$name: configure failed ($builddir/configure.log);" \
                 "\`make deps\` installs the packages it needs" >&2
            exit 1; }
    printf '%s\n' "$want" >"$stamp"
fi

echo "$name: building nginx and the module in $builddir (make.log)" >&2
make -s -j"$(nproc)" -C "$src" -f "$builddir/Makefile" binary modules \
    >"$builddir/make.log" 2>&1 || {
        tail -60 "$builddir/make.log" >&2
        echo "$name: make failed ($builddir/make.log)" >&2
        exit 1; }

ls -l "$builddir/nginx" >&2
[ -n "$bare" ] || ls -l "$builddir/ngx_http_corelog_module.so" >&2
