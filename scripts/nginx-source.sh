#!/bin/bash
# A full nginx source tree (Debian's nginx-dev has headers only), for the
# builds that need nginx itself compiled: `make asan`, `make fuzz`.
#
#   scripts/nginx-source.sh [VERSION]     prints the tree's path
#
# VERSION defaults to the installed nginx's (Debian bookworm: 1.22.1).  The
# tree is unpacked once into .build/nginx-VERSION/ and reused.  Where it
# comes from, in this order:
#   - $NGINX_TARBALLS/nginx-VERSION.tar.gz (default ../shared/nginx): the
#     release tags of nginx's repository (configure is auto/configure);
#   - Debian's source package of nginx, when VERSION is the version Debian
#     has (apt-get source --tar-only, from deb-src lists kept in .build/:
#     the system's apt configuration is not touched).
# Either way the tree gets a ./configure that runs the right script.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/.build

version=${1:-}
if [ -z "$version" ]; then
    version=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p')
    [ -n "$version" ] || { echo "nginx-source: no nginx installed" >&2; exit 1; }
fi

tree=$build/nginx-$version

if [ -x "$tree/configure" ] && [ -f "$tree/src/core/nginx.c" ]; then
    echo "$tree"
    exit 0
fi

mkdir -p "$build"
rm -rf "$tree" "$tree.tmp"
mkdir -p "$tree.tmp"

tarballs=${NGINX_TARBALLS:-$top/../shared/nginx}

if [ -f "$tarballs/nginx-$version.tar.gz" ]; then
    tar -xzf "$tarballs/nginx-$version.tar.gz" -C "$tree.tmp"

else
    # Debian's source package: private lists under .build/apt
    apt=$build/apt
    mkdir -p "$apt/lists/partial" "$apt/parts"
    cat >"$apt/parts/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    opts=(-o Dir::Etc::SourceList=/dev/null
          -o "Dir::Etc::SourceParts=$apt/parts"
          -o "Dir::State::Lists=$apt/lists"
          -o Debug::NoLocking=1
          -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" -q update >"$apt/update.log" 2>&1 || {
        cat "$apt/update.log" >&2; exit 1; }
    (cd "$tree.tmp" && apt-get "${opts[@]}" -q source --download-only \
        --tar-only nginx >"$apt/source.log" 2>&1) || {
        cat "$apt/source.log" >&2; exit 1; }
    orig=
    for f in "$tree.tmp"/nginx_*.orig.tar.gz; do
        [ -f "$f" ] && orig=$f && break
    done
    case $orig in
        */nginx_"$version".orig.tar.gz) ;;
        *) echo "nginx-source: Debian has ${orig##*/}, not nginx $version;" \
                "put nginx-$version.tar.gz in $tarballs" >&2
           exit 1 ;;
    esac
    tar -xzf "$orig" -C "$tree.tmp"
    rm -f "$orig"
fi

# one top directory, whatever its name
inner=$(find "$tree.tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
mv "$inner" "$tree"
rm -rf "$tree.tmp"

# the repository's tags have auto/configure only
if [ ! -e "$tree/configure" ] && [ -x "$tree/auto/configure" ]; then
    printf '#!/bin/sh\nexec auto/configure "$@"\n' >"$tree/configure"
    chmod +x "$tree/configure"
fi

echo "$tree"
