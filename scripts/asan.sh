#!/bin/bash
# `make asan`: the test suite with nginx itself AND the module built under
# AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/asan.sh            build .build/asan/, then prove over $TESTS
#   scripts/asan.sh --build    build only
#
# scripts/nginx-build.sh builds nginx from a full source tree (the
# installed nginx's version, 1.22.1 on bookworm) and the module as its
# dynamic module, with the same flags, in .build/asan/ (objs/ and `make
# build` are never touched; configure runs again only when its flags or
# ./config change; make is incremental).  NGX_DEBUG_PALLOC=1 makes every
# pool allocation its own malloc(): ASan then sees an overflow of a pool
# allocation too.
#
# The tests run with TEST_CORELOG_NGINX / TEST_CORELOG_MODULE naming these
# builds and TEST_CORELOG_ASAN=1: the harness (t/lib/Corelog/Test.pm) gives
# nginx ASAN_OPTIONS / UBSAN_OPTIONS (ASan's reports go to files in each
# test's directory, UBSan's to nginx's stderr: its error.log), and each test
# file fails "asan: no sanitizer reports" on any report; t/asan.supp and
# t/ubsan.supp suppress nginx's own.  The script prints the wall time.
# Variables: TESTS (default t/), PROVE_JOBS (default 2), PROVE_FLAGS,
# NGINX_VERSION (default: the installed nginx's).
set -euo pipefail

SECONDS=0
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=$top/.build/asan

# --- what the build needs ----------------------------------------------
# scripts/deps.sh: the module's build and the tests' packages (building
# nginx itself among them); here what the sanitizers add (addr2line:
# binutils).
"$top/scripts/deps.sh" gcc libasan8 libubsan1 binutils

if ! echo 'int main(void) { return 0; }' \
        | gcc -x c -fsanitize=address,undefined -o /dev/null - 2>/dev/null
then
    echo "asan: gcc -fsanitize=address,undefined does not link" >&2
    exit 1
fi

# --- nginx + the module under the sanitizers -----------------------------
# Sanitizers: UBSan recovers (gcc's default for -fsanitize=undefined: each
# report is logged and the process goes on, so one run shows all of them);
# ASan stops the process at its first report (the memory is corrupt then).
cc_opt="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined"
cc_opt="$cc_opt -DNGX_DEBUG_PALLOC=1"
ld_opt="-fsanitize=address,undefined"

"$top/scripts/nginx-build.sh" "$builddir" \
    --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt"

nginx_bin=$builddir/nginx
module=$builddir/ngx_http_corelog_module.so

[ "${1:-}" = --build ] && exit 0

# --- the tests ---------------------------------------------------------
cd "$top"    # TESTS are relative to the repository's top
build_secs=$SECONDS
rc=0
# shellcheck disable=SC2086  # TESTS and PROVE_FLAGS are word lists
TEST_CORELOG_NGINX=$nginx_bin TEST_CORELOG_MODULE=$module \
TEST_CORELOG_ASAN=1 \
    prove -I "$top/t/lib" -r -j"${PROVE_JOBS:-2}" ${PROVE_FLAGS:-} \
    ${TESTS:-t/} || rc=$?
secs=$SECONDS
printf 'asan: %dm%02ds wall clock (build %ds, tests %ds), prove exit %d\n' \
    $((secs / 60)) $((secs % 60)) "$build_secs" $((secs - build_secs)) \
    "$rc" >&2
exit "$rc"
