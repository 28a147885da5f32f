# shellcheck shell=bash
# Sourced by the scripts that run nginx's configure (build.sh,
# nginx-build.sh, install.sh).
#
# nginx's auto/make turns "X.S" (an assembler source) into "X.o" by a sed
# that also matches ".S" anywhere in an absolute path: a checkout under
# /home/j.Smith/ or /tmp/tmp.S1x2.../ gives make rules for files that do
# not exist ("No rule to make target .../j.omith/...").  safe_path PATH
# prints PATH when it has no ".S", else a symbolic link to it that has
# none: /tmp/corelog-paths-<uid>/<checksum of PATH>, in a directory of the
# user's own (mode 0700), the same link for the same PATH every time (the
# Makefile configure writes keeps naming it).
safe_path() {
    local path=$1 links name
    case $path in
        *.S*) ;;
        *) printf '%s\n' "$path"; return 0 ;;
    esac
    links=/tmp/corelog-paths-$(id -u)
    mkdir -m 0700 "$links" 2>/dev/null || true
    if [ -L "$links" ] || [ ! -d "$links" ] || [ ! -O "$links" ]; then
        echo "safe_path: $links is not a directory of this user's;" \
             "cannot link $path (its \".S\" breaks nginx's build)" >&2
        return 1
    fi
    name=$(printf '%s' "$path" | cksum | cut -d ' ' -f 1)
    ln -sfn "$path" "$links/$name"
    printf '%s\n' "$links/$name"
}
