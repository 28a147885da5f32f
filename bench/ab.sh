#!/bin/bash
# make bench-ab REF=<commit>: the module of REF (A) against the working
# tree's (B, as `make build` built it), in one run, on the same machine
# and the same PostgreSQL cluster.
#
# A is REF's tree (git archive) in .build/bench-ab/REF-<sha>/, built there
# with its own `make build`.  Each side runs its own shipped conf/nginx.conf
# and its own schema: two databases, corelog_a and corelog_b, each migrated
# by that side's scripts/migrate.sh and seeded the same way, so that a
# change to the schema (a key dropped, an index added) is measured too.
# Both nginx run side by side (A on BENCH_PORT, default 18580, B on
# BENCH_PORT+2; their status servers on +1 and +3) and only one gets load
# at a time: per route, BENCH_AB_PAIRS pairs (default 8) of runs A, B, A,
# B..., wrk -t2 -c64, BENCH_AB_WARMUP (1s) then BENCH_AB_DURATION (4s)
# measured, the route's tables emptied and checkpointed before each run.
# The load (bench/*.lua) is the working tree's for both sides.
#
# Prints per pair req/s, server CPU per request (nginx + PostgreSQL, split)
# and p99 of A and B, the differences (B - A) / A; per route the median
# difference with its sign-test 95 % interval and min/max; a summary at
# the end (also in .build/bench-ab/out/report).  BENCH_ROUTES picks
# routes (default: core_log channel_log logtank).
#
#   bench/ab.sh REF            (make bench-ab REF=main BENCH_AB_PAIRS=10)

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ref=${1:-${REF:-}}
base=$top/.build/bench-ab
out=$base/out
conns=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
duration=${BENCH_AB_DURATION:-4s}
warmup=${BENCH_AB_WARMUP:-1s}
ab_pairs=${BENCH_AB_PAIRS:-8}
port=${BENCH_PORT:-18580}
pgport=${BENCH_PGPORT:-18532}
routes=${BENCH_ROUTES:-core_log channel_log logtank}
# request/response pairs for core logs, per database: the warm-up uses
# 1.., the measured runs $moffset+1.. (each run starts from empty tables,
# so every run can use the same pairs)
pairs=${BENCH_PAIRS:-600000}
moffset=$((pairs / 3))

# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"

[ -n "$ref" ] || die "usage: bench/ab.sh REF (make bench-ab REF=<commit>)"
for r in $routes; do
    case $r in core_log|channel_log|logtank) ;;
               *) die "BENCH_ROUTES: no route $r (core_log channel_log logtank)" ;;
    esac
done
[ -f "$top/objs/ngx_http_corelog_module.so" ] ||
    die "build the working tree's module first (make build)"
sha=$(git -C "$top" rev-parse --verify --quiet "$ref^{commit}") ||
    die "REF=$ref is not a commit"
short=${sha:0:12}
subject=$(git -C "$top" log -1 --format=%s "$sha" | cut -c 1-60)

# --- A: REF's tree, built with its own make build ----------------------------
adir=$base/REF-$short
if [ ! -f "$adir/.extracted" ]; then
    rm -rf "$adir"
    mkdir -p "$adir"
    git -C "$top" archive "$sha" | tar -x -C "$adir"
    touch "$adir/.extracted"
fi
echo "bench-ab: building A ($short) in $adir (build.log)..."
(cd "$adir" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make build) \
    >"$adir/build.log" 2>&1 || {
        tail -30 "$adir/build.log" >&2
        die "the build of REF=$ref ($short) failed ($adir/build.log)"; }

# the two sides: their trees, modules, ports, databases
declare -A tree label api sport ci seed wk
tree[a]=$adir
tree[b]=$top
label[a]="A = $short ($subject)"
# what B runs that may differ from HEAD: the module's sources, its conf,
# its schema and the scripts that build and migrate
changed=$(git -C "$top" status --porcelain -- src config conf sql scripts |
          wc -l)
label[b]="B = the working tree (HEAD $(git -C "$top" rev-parse --short=12 HEAD)"
if [ "$changed" = 0 ]; then
    label[b]="${label[b]}, no change in src/ config conf/ sql/ scripts/)"
else
    label[b]="${label[b]} and $changed changed paths in src/ config conf/ sql/ scripts/)"
fi
api[a]=$port
sport[a]=$((port + 1))
api[b]=$((port + 2))
sport[b]=$((port + 3))
for s in a b; do
    [ -f "${tree[$s]}/objs/ngx_http_corelog_module.so" ] ||
        die "${tree[$s]}: no objs/ngx_http_corelog_module.so after the build"
    [ -f "${tree[$s]}/conf/nginx.conf" ] || die "${tree[$s]}: no conf/nginx.conf"
    ci[$s]=$(db_conninfo "corelog_$s")
done

cleanup() { [ -n "${BENCH_KEEP:-}" ] || stop; }
trap cleanup EXIT
stop
fresh_out

# each side's own conf, with whatever @...@ values it has replaced; both
# must pass nginx -t before anything starts
for s in a b; do
    write_conf on "nginx-$s" "${api[$s]}" "$out/error-$s.log" \
        "${tree[$s]}/conf/nginx.conf" \
        "${tree[$s]}/objs/ngx_http_corelog_module.so" "${sport[$s]}" \
        "${ci[$s]}"
done
check_conf nginx-a "REF $short's conf/nginx.conf"
check_conf nginx-b "the working tree's conf/nginx.conf"

pg_setup
for s in a b; do
    echo "bench-ab: database corelog_$s: ${tree[$s]}'s migrations, $pairs request/response pairs..."
    db_create "corelog_$s" "${tree[$s]}"
    db_seed "${ci[$s]}" "$pairs"
    seed[$s]="$ts $cp $ch $grp $stream $token"
done

for s in a b; do
    nginx_start "nginx-$s" "$out/$s/" "$out/error-$s.log"
    wk[$s]=$workers
done

script_of() {
    case $1 in
        core_log) echo corelog.lua ;;
        channel_log) echo channel.lua ;;
        logtank) echo logtank.lua ;;
    esac
}

# route_report ROUTE: the pairs of $out/ROUTE, their differences and
# spread
route_report() {
    echo
    echo "$1: ${label[a]}"
    echo "${1//?/ }  ${label[b]}"
    echo "$ab_pairs pairs alternating A, B; wrk -t$threads -c$conns -d$duration after $warmup of warm-up;" \
         "the route's tables emptied and checkpointed before each run"
    echo "server CPU = nginx + PostgreSQL, core-µs per request; diff = (B - A) / A, per pair;"
    echo "others: cores busy with anything else during the run (wrk, the kernel, other processes):"
    RDIR=$out/$1 perl -I"$top/bench" -e '
        require "pairs.pl";
        my $run = read_runs($ENV{RDIR});
        my (%col, %d, @lines);
        printf "  %-6s %8s %8s %7s   %-18s %-18s %7s   %6s %6s %7s %11s\n",
            "pair", "req/s A", "B", "diff", "cpu A (nginx+pg)",
            "cpu B (nginx+pg)", "diff", "p99 A", "B", "diff", "others A/B";
        for (my $i = 1; $run->{"a-$i"} && $run->{"b-$i"}; $i++) {
            my ($x, $y) = ($run->{"a-$i"}, $run->{"b-$i"});
            $_->{srv} = $_->{nginx} + $_->{pg} for $x, $y;
            for my $k (qw(rps srv nginx pg p99)) {
                push @{$d{$k}}, pct($y->{$k}, $x->{$k});
                push @{$col{"a$k"}}, $x->{$k};
                push @{$col{"b$k"}}, $y->{$k};
            }
            $col{non2xx}[0] += $x->{non2xx};
            $col{non2xx}[1] += $y->{non2xx};
            printf "  %-6s %8.0f %8.0f %+6.1f%%   %-18s %-18s %+6.1f%%   %6.2f %6.2f %+6.1f%% %11s\n",
                $i, $x->{rps}, $y->{rps}, $d{rps}[-1],
                sprintf("%.1f (%.1f+%.1f)", @{$x}{qw(srv nginx pg)}),
                sprintf("%.1f (%.1f+%.1f)", @{$y}{qw(srv nginx pg)}),
                $d{srv}[-1], $x->{p99}, $y->{p99}, $d{p99}[-1],
                sprintf("%.2f/%.2f", $x->{others} * $x->{rps} / 1e6,
                                     $y->{others} * $y->{rps} / 1e6);
        }
        die "no complete pair\n" unless $d{srv};
        my %m = map { $_ => median(@{$col{$_}}) } grep { !/non2xx/ } keys %col;
        printf "  %-6s %8.0f %8.0f %7s   %-18s %-18s %7s   %6.2f %6.2f\n",
            "median", $m{arps}, $m{brps}, "",
            sprintf("%.1f (%.1f+%.1f)", @m{qw(asrv anginx apg)}),
            sprintf("%.1f (%.1f+%.1f)", @m{qw(bsrv bnginx bpg)}),
            "", $m{ap99}, $m{bp99};
        print "difference B - A over the ", scalar @{$d{srv}}, " pairs:\n";
        print "  server CPU per request:      ", spread(@{$d{srv}}), "\n";
        print "  nginx CPU per request:       ", spread(@{$d{nginx}}), "\n";
        print "  PostgreSQL CPU per request:  ", spread(@{$d{pg}}), "\n";
        print "  req/s:                       ", spread(@{$d{rps}}), "\n";
        print "  p99:                         ", spread(@{$d{p99}}), "\n";
        print "non-2xx answers: A $col{non2xx}[0], B $col{non2xx}[1]",
              ($col{non2xx}[0] || $col{non2xx}[1]
               ? " (not all runs stored their rows: their figures are not comparable)" : ""),
              "\n";
        open my $s, ">", "$ENV{RDIR}/summary" or die;
        printf $s "%-12s server CPU A %5.1f B %5.1f core-µs  %s\n", $ARGV[0],
            $m{asrv}, $m{bsrv}, spread(@{$d{srv}});
        printf $s "%-12s req/s      A %5.0f B %5.0f          %s\n", "",
            $m{arps}, $m{brps}, spread(@{$d{rps}});
        printf $s "%-12s p99 ms     A %5.2f B %5.2f          %s\n", "",
            $m{ap99}, $m{bp99}, spread(@{$d{p99}});
    ' "$1"
}

: >"$out/report"
for r in $routes; do
    rdir=$out/$r
    mkdir -p "$rdir"
    for f in results cpu batches rss; do : >"$rdir/$f"; done
    for i in $(seq "$ab_pairs"); do
        for s in a b; do
            echo "bench-ab: $r, pair $i of $ab_pairs, ${s^^}..."
            empty_tables "${ci[$s]}" "$r"
            conninfo=${ci[$s]} url=http://127.0.0.1:${api[$s]} workers=${wk[$s]}
            read -r BENCH_TS BENCH_CP BENCH_CHANNEL BENCH_GROUP BENCH_STREAM \
                BENCH_TOKEN <<<"${seed[$s]}"
            export BENCH_TS BENCH_CP BENCH_CHANNEL BENCH_GROUP BENCH_STREAM \
                BENCH_TOKEN BENCH_THREADS=$threads
            run "$s-$i" "$(script_of "$r")" "$conns" "$duration" "$warmup"
        done
    done
    route_report "$r" | tee -a "$out/report"
done

nginx_stop nginx-a
nginx_stop nginx-b

{
    echo
    echo "bench-ab summary: median of the pairs, and the median difference (B - A) / A with its 95 % interval:"
    echo "  ${label[a]}"
    echo "  ${label[b]}"
    for r in $routes; do sed 's/^/  /' "$out/$r/summary"; done
    for s in a b; do
        echo "error log ${s^^}: $(grep -cE '\[(alert|crit|emerg)\]' \
            "$out/error-$s.log" || true) [alert]/[crit]/[emerg] lines"
    done
} | tee -a "$out/report"
