#!/bin/bash
# `make test-matrix`: the whole test suite against each nginx version there
# is a source of, one line per version at the end.
#
#   scripts/matrix.sh                every version: Debian's, then each
#                                    $NGINX_TARBALLS/nginx-X.Y.Z.tar.gz
#   scripts/matrix.sh --tarballs     each tarball's version, not Debian's
#                                    (.ci/run, after `make test`); none:
#                                    says where to put one, exit 0
#   scripts/matrix.sh 1.30.4 ...     those versions only (`make test-nginx
#                                    NGINX_VERSION=1.30.4`); "debian" names
#                                    Debian's
#
# Debian's version is the installed /usr/sbin/nginx with the module built
# against Debian's nginx-dev tree (objs/, as `make test`).  Every other
# version X.Y.Z is built from $NGINX_TARBALLS/nginx-X.Y.Z.tar.gz (default
# ../shared/nginx: release tags of nginx's repository, or nginx.org's
# tarballs: either works) by scripts/nginx-build.sh into .build/matrix/X.Y.Z/
# with --with-compat, --with-debug and the modules the tests need, the
# module as its dynamic module; then prove runs t/ with that nginx binary
# and that .so (TEST_CORELOG_NGINX, TEST_CORELOG_MODULE).  A version's build
# and test output is in .build/matrix/logs/X.Y.Z.{build,prove}.log.
#
# The last lines printed (also in .build/matrix/summary) are one per
# version:
#   nginx 1.30.4         PASS  43 files, 983 tests  4m08s  .build/matrix/logs/...
# Exit 0 when every version passed.  Variables: TESTS, PROVE_JOBS,
# PROVE_FLAGS as for `make test`; NGINX_TARBALLS.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tarballs=${NGINX_TARBALLS:-$top/../shared/nginx}
tarballs=$(realpath -m "$tarballs")
matrix=$top/.build/matrix
logs=$matrix/logs
mkdir -p "$logs"

debian_version() {
    /usr/sbin/nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p'
}

tarballs_only=
if [ "${1:-}" = --tarballs ]; then
    tarballs_only=1
    shift
fi

versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
    [ -n "$tarballs_only" ] || versions=(debian)
    found=
    for f in "$tarballs"/nginx-*.tar.gz; do
        [ -f "$f" ] || continue
        v=${f##*/nginx-}
        versions+=("${v%.tar.gz}")
        found=1
    done
    if [ -z "$found" ]; then
        echo "matrix: no nginx-X.Y.Z.tar.gz in $tarballs: only Debian's" \
             "nginx is tested.  For another version, put nginx.org's" \
             "tarball (https://nginx.org/download/nginx-X.Y.Z.tar.gz) there" \
             "or name its directory with NGINX_TARBALLS=<dir>" >&2
        [ ${#versions[@]} -gt 0 ] || exit 0
    fi
fi

# checksums, when the directory has them (../shared/nginx does)
if [ -f "$tarballs/SHA256SUMS" ]; then
    (cd "$tarballs" && sha256sum --quiet --ignore-missing -c SHA256SUMS) || {
        echo "matrix: a tarball in $tarballs does not match its SHA256SUMS" >&2
        exit 1; }
fi

summary=()
rc=0

for v in "${versions[@]}"; do
    SECONDS=0
    if [ "$v" = debian ] || { [ "$v" = "$(debian_version)" ] \
            && [ ! -f "$tarballs/nginx-$v.tar.gz" ]; }; then
        v=$(debian_version)
        [ -n "$v" ] || { echo "matrix: no /usr/sbin/nginx (make deps)" >&2
                         exit 1; }
        log=$logs/debian-$v
        label="$v (Debian)"
        nginx=/usr/sbin/nginx
        module=$top/objs/ngx_http_corelog_module.so
        build=("$top/scripts/build.sh")
    else
        if [ ! -f "$tarballs/nginx-$v.tar.gz" ]; then
            echo "matrix: no $tarballs/nginx-$v.tar.gz: put nginx.org's" \
                 "tarball (https://nginx.org/download/nginx-$v.tar.gz)" \
                 "there, or name its directory with NGINX_TARBALLS=<dir>" >&2
            summary+=("$(printf 'nginx %-14s NO SOURCE  %s' "$v" \
                         "no $tarballs/nginx-$v.tar.gz")")
            rc=1
            continue
        fi
        dir=$matrix/$v
        log=$logs/$v
        label=$v
        nginx=$dir/nginx
        module=$dir/ngx_http_corelog_module.so
        build=(env NGINX_VERSION="$v" NGINX_TARBALLS="$tarballs"
               "$top/scripts/nginx-build.sh" "$dir")
    fi

    echo "matrix: nginx $label: building" >&2
    if ! "${build[@]}" >"$log.build.log" 2>&1; then
        tail -30 "$log.build.log" >&2
        summary+=("$(printf 'nginx %-14s BUILD FAILED  %s' \
                     "$label" "${log#"$top"/}.build.log")")
        rc=1
        continue
    fi

    echo "matrix: nginx $label: testing ($nginx, $module)" >&2
    prc=0
    # shellcheck disable=SC2086  # TESTS and PROVE_FLAGS are word lists
    TEST_CORELOG_NGINX=$nginx TEST_CORELOG_MODULE=$module \
        prove -I "$top/t/lib" -r -j"${PROVE_JOBS:-2}" ${PROVE_FLAGS:-} \
        ${TESTS:-t/} >"$log.prove.log" 2>&1 || prc=$?
    counts=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1 files, \2 tests/p' \
             "$log.prove.log" | tail -1)
    time=$(printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)))
    if [ "$prc" -eq 0 ]; then
        result=PASS
    else
        result=FAIL
        rc=1
        # the failures' summary table
        sed -n '/^Test Summary Report/,$p' "$log.prove.log" >&2
    fi
    summary+=("$(printf 'nginx %-14s %s  %s  %s  %s' "$label" "$result" \
                 "${counts:-no test summary}" "$time" \
                 "${log#"$top"/}.prove.log")")
done

printf '%s\n' "${summary[@]}" | tee "$matrix/summary"
exit "$rc"
