#!/bin/bash
# make mutate: the mutation run (docs/contributing.md, "Mutation testing").
#
# Each mutant of mutate/mutants is applied alone to a copy of the module's
# source (.build/mutate/tree), which is built once against NGINX_SRC with
# scripts/build.sh's flags (.build/mutate/objs: a mutant recompiles one file
# and relinks).  Its test files run first, one at a time, with
# TEST_CORELOG_MODULE pointing at the mutant's .so; if they all pass, the
# rest of t/ runs (prove -j2).  A failing test file, a timeout, or a mutant
# that does not compile kills it; a mutant that passes everything survives.
#
#   scripts/mutate.sh            run every mutant
#   scripts/mutate.sh --check    only check that every mutant still applies
#
# Variables: MUTANTS="id id..." (a subset), MUTATE_MIN (the lowest score
# in per cent that passes, default 95), MUTATE_TIMEOUT (seconds for one
# prove run, default 600), NGINX_SRC.  Logs: .build/mutate/logs/<id>.log;
# the last run's verdicts: .build/mutate/results.
#
# Exit status: 0, 1 when the score is below MUTATE_MIN, 2 when a mutant
# does not apply (or the unmutated copy does not build).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
list=$top/mutate/mutants
work=$top/.build/mutate
tree=$work/tree
objs=$work/objs
logs=$work/logs
so=$objs/ngx_http_corelog_module.so
min=${MUTATE_MIN:-95}
limit=${MUTATE_TIMEOUT:-600}

# The mutants file: "list" prints id, file, tests, description (tab
# separated); "check ROOT" checks that each applies to ROOT's files;
# "apply ROOT ID" applies one.
mutants() {
    perl - "$list" "$@" <<'EOF'
use strict;
use warnings;

my ($list, $cmd, $root, $want) = @ARGV;
my (@m, %seen, $cur, $bad);

sub fail { print STDERR "mutate: $list:$.: $_[0]\n"; $bad = 1 }

open my $fh, '<', $list or die "mutate: $list: $!\n";

while (my $line = <$fh>) {
    chomp $line;

    if ($line =~ /^## ([a-z0-9][a-z0-9-]*): (.+)$/
        && !($cur && !defined $cur->{file}))
    {
        $cur = { id => $1, desc => $2, minus => [], plus => [], line => $. };
        fail("duplicate id $1") if $seen{$1}++;
        push @m, $cur;

    } elsif ($line =~ /^## (.*)$/ && $cur && !defined $cur->{file}) {
        $cur->{desc} .= " $1";

    } elsif ($line =~ /^file: (\S+)$/ && $cur) {
        $cur->{file} = $1;

    } elsif ($line =~ /^tests: (.+)$/ && $cur) {
        $cur->{tests} = [split ' ', $1];

    } elsif ($line =~ /^-(.*)$/ && $cur) {
        fail("\"-\" after \"+\" in $cur->{id}") if @{$cur->{plus}};
        push @{$cur->{minus}}, $1;

    } elsif ($line =~ /^\+(.*)$/ && $cur) {
        push @{$cur->{plus}}, $1;

    } elsif ($line =~ /^#/ || $line =~ /^\s*$/) {
        # a comment

    } else {
        fail("unexpected line: $line");
    }
}

for my $x (@m) {
    $. = $x->{line};
    fail("$x->{id}: no file:") unless defined $x->{file};
    fail("$x->{id}: no tests:") unless $x->{tests};
    fail("$x->{id}: no \"-\" lines") unless @{$x->{minus}};
    $x->{from} = join "\n", @{$x->{minus}};
    $x->{to} = join "\n", @{$x->{plus}};
    fail("$x->{id}: the replacement is the original") if $x->{from} eq $x->{to};
}

exit 2 if $bad;

sub count {
    my ($text, $s) = @_;
    my ($n, $at) = (0, 0);
    while (($at = index $text, $s, $at) >= 0) { $n++; $at += length $s }
    return $n;
}

sub slurp {
    my $f = shift;
    open my $in, '<', $f or return undef;
    local $/;
    return scalar <$in>;
}

if ($cmd eq 'list') {
    print join("\t", $_->{id}, $_->{file}, "@{$_->{tests}}", $_->{desc}), "\n"
        for @m;
    exit 0;
}

if ($cmd eq 'check') {
    for my $x (@m) {
        for my $t (@{$x->{tests}}) {
            print STDERR "mutate: $x->{id}: no test file $t\n", $bad = 1
                unless -f "$root/$t";
        }
        my $text = slurp("$root/$x->{file}");
        if (!defined $text) {
            print STDERR "mutate: $x->{id}: no file $x->{file}\n";
            $bad = 1;
            next;
        }
        my $n = count($text, $x->{from});
        next if $n == 1;
        print STDERR "mutate: $x->{id} does not apply: its original text ",
            ($n ? "occurs $n times" : "is not"), " in $x->{file}:\n",
            map({ "    $_\n" } @{$x->{minus}});
        $bad = 1;
    }
    exit($bad ? 2 : 0);
}

if ($cmd eq 'apply') {
    my ($x) = grep { $_->{id} eq $want } @m or die "mutate: no mutant $want\n";
    my $f = "$root/$x->{file}";
    my $text = slurp($f) // die "mutate: $f: $!\n";
    count($text, $x->{from}) == 1 or die "mutate: $want does not apply\n";
    my $at = index $text, $x->{from};
    substr($text, $at, length $x->{from}) = $x->{to};
    open my $out, '>', $f or die "mutate: $f: $!\n";
    print $out $text;
    close $out or die "mutate: $f: $!\n";
    exit 0;
}

die "mutate: unknown command $cmd\n";
EOF
}

if ! mutants check "$top"; then
    echo "mutate: bring the mutants above up to date with the code" \
         "(mutate/mutants)" >&2
    exit 2
fi

if [ "${1:-}" = --check ]; then
    echo "mutate: all $(mutants list | wc -l) mutants apply"
    exit 0
fi

# the mutants to run

declare -a ids files tests descs
while IFS=$'\t' read -r id file t desc; do
    if [ -n "${MUTANTS:-}" ] && ! [[ " ${MUTANTS//,/ } " == *" $id "* ]]; then
        continue
    fi
    ids+=("$id"); files+=("$file"); tests+=("$t"); descs+=("$desc")
done < <(mutants list)

if [ -n "${MUTANTS:-}" ]; then
    for id in ${MUTANTS//,/ }; do
        if ! [[ " ${ids[*]:-} " == *" $id "* ]]; then
            echo "mutate: no mutant \"$id\" in mutate/mutants" >&2
            exit 2
        fi
    done
fi

n=${#ids[@]}
if [ "$n" -eq 0 ]; then
    echo "mutate: no mutants" >&2
    exit 2
fi

# the copy of the source: files that changed are copied again (and so
# recompiled); nothing is ever mutated outside it

sources=(config ngx_http_corelog_module.c src/*)

mkdir -p "$tree/src" "$logs"
for f in "${sources[@]}"; do
    cmp -s "$top/$f" "$tree/$f" || cp "$top/$f" "$tree/$f"
done
for f in "$tree"/src/*; do
    [ -e "$top/src/${f##*/}" ] || rm -f "$f"
done

current=
testpid=

restore() {
    if [ -n "$current" ]; then
        cp "$top/$current" "$tree/$current"
        current=
    fi
}

# Ctrl-C: timeout runs prove in a process group of its own, so the
# terminal's SIGINT does not reach the tests: end them, then restore
stop() {
    trap - INT TERM
    if [ -n "$testpid" ]; then
        kill -TERM "$testpid" 2>/dev/null || true
        wait "$testpid" 2>/dev/null || true
    fi
    restore
    echo "mutate: interrupted by SIG$1" >&3
    exit 130
}

# fd 3: stderr, even while the trap runs inside a redirected build
exec 3>&2

trap restore EXIT
trap 'stop INT' INT
trap 'stop TERM' TERM

build() {
    CORELOG_MODULE_DIR=$tree CORELOG_OBJS=$objs "$top/scripts/build.sh"
}

echo "mutate: building the unmutated copy in .build/mutate/"
if ! build > "$logs/build.log" 2>&1; then
    cat "$logs/build.log" >&2
    echo "mutate: the unmutated copy does not build" >&2
    exit 2
fi
pristine=$work/unmutated.so
cp "$so" "$pristine"

cd "$top"
all_tests=(t/*.t)

# prove on some files with the mutant (in the background, so that a
# signal reaches stop() at once); by: the files that failed
run_tests() {
    local jobs=$1 log=$2 rc=0
    shift 2

    by=
    TEST_CORELOG_MODULE=${module:-$so} timeout -k 10 "$limit" \
        prove -I t/lib -j"$jobs" "$@" >> "$log" 2>&1 &
    testpid=$!
    wait "$testpid" || rc=$?
    testpid=

    [ "$rc" -eq 0 ] && return 0

    if [ "$#" -eq 1 ]; then
        by=$1
    else
        # prove's summary: "t/041-batch.t (Wstat: 256 ...)"
        by=$(sed -n 's/^\(t\/[^ ]*\.t\) *(Wstat.*/\1/p' "$log" \
             | sort -u | tr '\n' ' ' | sed 's/ $//')
        by=${by:-the rest of t/}
    fi

    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        by="$by (timeout after $limit s)"
    fi

    return 1
}

killed=0
survivors=()
flaky=()
start=$SECONDS
: > "$work/results"

for ((i = 0; i < n; i++)); do
    id=${ids[i]}
    file=${files[i]}
    log=$logs/$id.log
    t0=$SECONDS
    : > "$log"

    current=$file
    mutants apply "$tree" "$id"

    verdict=
    if ! build >> "$log" 2>&1; then
        verdict="KILLED by the compiler"
    else
        read -r -a mine <<< "${tests[i]}"

        for t in "${mine[@]}"; do
            if ! run_tests 1 "$log" "$t"; then
                verdict="KILLED by $by"
                break
            fi
        done

        if [ -z "$verdict" ]; then
            rest=()
            for t in "${all_tests[@]}"; do
                [[ " ${mine[*]} " == *" $t "* ]] || rest+=("$t")
            done

            if ! run_tests 2 "$log" "${rest[@]}"; then
                verdict="KILLED by $by (fallback)"

                # a test that is not the mutant's may have failed by
                # itself (timing on a loaded machine): the kill counts
                # only if the files that failed pass unmutated
                read -r -a again <<< "${by% (timeout*}"
                if [[ "${again[0]:-}" == t/* ]] \
                   && ! module=$pristine run_tests 1 "$log" "${again[@]}"
                then
                    flaky+=("$id: ${verdict#KILLED by }")
                    verdict=
                fi
            fi
        fi
    fi

    restore

    if [ -n "$verdict" ]; then
        killed=$((killed + 1))
    else
        verdict="SURVIVED"
        survivors+=("$id")
    fi

    printf '[%2d/%d] %-34s %s (%d s)\n' $((i + 1)) "$n" "$id" "$verdict" \
           $((SECONDS - t0))
    printf '%s\t%s\t%d\n' "$id" "$verdict" $((SECONDS - t0)) \
           >> "$work/results"
done

score=$(awk -v k="$killed" -v n="$n" 'BEGIN { printf "%.1f", 100 * k / n }')

echo
echo "mutation score: $killed/$n ($score %) in $(((SECONDS - start) / 60)) min"

if [ "${#survivors[@]}" -gt 0 ]; then
    echo "survivors:"
    for ((i = 0; i < n; i++)); do
        if [[ " ${survivors[*]} " == *" ${ids[i]} "* ]]; then
            echo "  ${ids[i]}: ${descs[i]}"
        fi
    done
fi

if [ "${#flaky[@]}" -gt 0 ]; then
    echo "not counted as kills (those files fail unmutated too):"
    printf '  %s\n' "${flaky[@]}"
fi

if awk -v s="$score" -v m="$min" 'BEGIN { exit !(s < m) }'; then
    echo "mutate: the score is below MUTATE_MIN ($min %)"
    exit 1
fi
