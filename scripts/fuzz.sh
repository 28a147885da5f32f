#!/bin/bash
# `make fuzz`: libFuzzer targets for the module's input parsers (fuzz/).
#
#   scripts/fuzz.sh            build, then run every target FUZZ_SECONDS
#   scripts/fuzz.sh --build    build only
#
# nginx comes from a full source tree (scripts/nginx-source.sh), configured
# with clang into .build/fuzz by scripts/nginx-build.sh --bare (objs/ is
# never touched) with --add-module=<this repository>: the module is
# compiled into nginx, statically, with
# -fsanitize=fuzzer-no-link,address,undefined and NGX_DEBUG_PALLOC=1 (every
# pool allocation its own malloc(), so ASan sees an overflow of one).  Each
# target is its harness (fuzz/*.c) linked with every object of that build
# but nginx.c's main() (nginx.c is compiled again with main renamed) and
# with libFuzzer's main().
#
# Each target runs FUZZ_SECONDS on its work corpus .build/fuzz-corpus/<t>/
# (kept between runs) plus the seeds in fuzz/corpus/<t>/; what it finds
# (crash-*, leak-*, timeout-*, oom-*) goes to .build/fuzz-artifacts/, the
# output to .build/fuzz-logs/<t>.log.  Exit status 1 when a target failed.
# Variables: FUZZ_TARGETS (default: all), FUZZ_SECONDS (default 60),
# FUZZ_FLAGS (more libFuzzer flags), NGINX_VERSION (default: the installed
# nginx's, else 1.22.1).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
builddir=$top/.build/fuzz
harness=$builddir/harness
corpora=$top/.build/fuzz-corpus
artifacts=$top/.build/fuzz-artifacts
logs=$top/.build/fuzz-logs

all_targets=(fuzz_core_log fuzz_channel_log fuzz_logtank fuzz_conninfo)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"
seconds=${FUZZ_SECONDS:-60}

for t in "${targets[@]}"; do
    case " ${all_targets[*]} " in
        *" $t "*) ;;
        *) echo "fuzz: unknown target \"$t\" (${all_targets[*]})" >&2
           exit 2 ;;
    esac
done

case $seconds in
    ''|*[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a number" >&2; exit 2 ;;
esac

# --- what the build needs ---------------------------------------------------
# libFuzzer (libclang_rt.fuzzer*.a) is in libclang-rt-14-dev on bookworm.
"$top/scripts/deps.sh" --only clang libclang-rt-14-dev make libc6-dev \
    pkg-config libpcre2-dev zlib1g-dev libssl-dev libpq-dev libjansson-dev

cc=clang
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' \
        | "$cc" -x c -fsanitize=fuzzer,address,undefined -o /dev/null - \
            2>/dev/null
then
    echo "fuzz: $cc -fsanitize=fuzzer,address,undefined does not link" \
         "(libFuzzer: libclang-rt-14-dev)" >&2
    exit 1
fi

# --- nginx + the module, static, under the sanitizers -------------------
version=${NGINX_VERSION:-}
if [ -z "$version" ] && ! command -v nginx >/dev/null 2>&1; then
    version=1.22.1
fi
src=$("$top/scripts/nginx-source.sh" ${version:+"$version"})

sanitize="-fsanitize=fuzzer-no-link,address,undefined"
cc_opt="-g -O1 -fno-omit-frame-pointer $sanitize -DNGX_DEBUG_PALLOC=1"
ld_opt="-fsanitize=address,undefined"

# only what the module needs: no rewrite (so no PCRE), no gzip (no zlib)
conf_args=(--with-cc="$cc" --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt"
           --without-pcre --without-http_rewrite_module
           --without-http_gzip_module
           --add-module="$top")

# the static module: its "modules" target is empty; configure runs test
# programs built with the sanitizers (nginx's leaks are not our failures)
ASAN_OPTIONS=detect_leaks=0 NGINX_VERSION=$version \
    "$top/scripts/nginx-build.sh" --bare "$builddir" "${conf_args[@]}"

# --- the targets ----------------------------------------------------------
# The objects and libraries of nginx's own link command: the lines after
# "$(LINK) -o <builddir>/nginx" up to the one without a backslash.
link=$(awk -v bin="$builddir/nginx" '
    $1 == "$(LINK)" && $2 == "-o" && $3 == bin { on = 1; next }
    on { more = sub(/\\$/, ""); print; if (!more) exit }' \
    "$builddir/Makefile")

objs=()
libs=()
for w in $link; do
    case $w in
        */src/core/nginx.o) ;;
        *.o) objs+=("$w") ;;
        -*) libs+=("$w") ;;
        *) echo "fuzz: unexpected word in nginx's link command: $w" >&2
           exit 1 ;;
    esac
done

if [ ${#objs[@]} -lt 10 ]; then
    echo "fuzz: no objects in $builddir/Makefile's link command" >&2
    exit 1
fi

# nginx's CFLAGS (with the cc-opt above) for nginx.c; for the harness too,
# which also gets the module's includes and libpq's
cflags=$(sed -n 's/^CFLAGS = //p' "$builddir/Makefile")
pg_inc=$(pg_config --includedir 2>/dev/null \
         || pkg-config --variable=includedir libpq)
incs=(-I"$builddir" -I"$src/src/core" -I"$src/src/event"
      -I"$src/src/event/modules" -I"$src/src/os/unix" -I"$src/src/http"
      -I"$src/src/http/modules" -I"$top/src" -I"$pg_inc")

mkdir -p "$harness"

# shellcheck disable=SC2086  # cflags is a word list
"$cc" $cflags "${incs[@]}" -Dmain=ngx_fuzz_nginx_main \
    -c "$src/src/core/nginx.c" -o "$harness/nginx.o"

# shellcheck disable=SC2086
"$cc" $cflags "${incs[@]}" \
    -c "$top/fuzz/ngx_http_corelog_fuzz.c" -o "$harness/ngx_http_corelog_fuzz.o"

for t in "${all_targets[@]}"; do
    # shellcheck disable=SC2086
    "$cc" $cflags "${incs[@]}" \
        -c "$top/fuzz/$t.c" -o "$harness/$t.o"
    "$cc" -g -fsanitize=fuzzer,address,undefined -o "$builddir/$t" \
        "$harness/$t.o" "$harness/ngx_http_corelog_fuzz.o" "$harness/nginx.o" \
        "${objs[@]}" "${libs[@]}"
done

echo "fuzz: targets: ${all_targets[*]/#/$builddir/}" >&2

[ "${1:-}" = --build ] && exit 0

# --- the runs -------------------------------------------------------------
mkdir -p "$corpora" "$artifacts" "$logs"

# UBSan reports are failures too (it recovers by default), but for the
# few in nginx itself that fuzz/ubsan.supp lists
ubsan=halt_on_error=1:print_stacktrace=1:suppressions=$top/fuzz/ubsan.supp
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-$ubsan}

failed=()

for t in "${targets[@]}"; do
    case $t in
        fuzz_conninfo) max_len=4096; dict=$top/fuzz/conninfo.dict ;;
        *) max_len=65536; dict=$top/fuzz/dict ;;
    esac

    mkdir -p "$corpora/$t"
    log=$logs/$t.log

    echo "fuzz: $t: ${seconds}s" \
         "(work corpus $corpora/$t, seeds fuzz/corpus/$t)" >&2

    rc=0
    # shellcheck disable=SC2086  # FUZZ_FLAGS is a word list
    "$builddir/$t" -max_total_time="$seconds" -max_len="$max_len" \
        -timeout=5 -rss_limit_mb=2048 -dict="$dict" \
        -artifact_prefix="$artifacts/$t-" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} "$corpora/$t" "$top/fuzz/corpus/$t" \
        >"$log" 2>&1 || rc=$?

    # the last status line: "#N DONE cov: .. ft: .. corp: ../..b ..."
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $t: ${last:-no status line} (execs: ${execs:-?})"

    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); from $log:" >&2
        # the report: from its first line (ours, ASan's, UBSan's, libFuzzer's)
        sed -n '/^corelog-fuzz: [Im]\|==ERROR\|runtime error:\|== ERROR/,$p' \
            "$log" | head -60 >&2
        grep -h 'Test unit written to' "$log" >&2 || true
        echo "fuzz: reproduce: $builddir/$t <artifact>" >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi

echo "fuzz: no crash in ${targets[*]}" >&2
