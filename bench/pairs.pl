# bench/pairs.pl: the statistics of alternating runs (make bench's status
# zone, make bench-ab), required by their reports.

use strict;
use warnings;

sub median {
    my @v = sort { $a <=> $b } @_;
    my $n = @v;
    $n % 2 ? $v[$n / 2] : ($v[$n / 2 - 1] + $v[$n / 2]) / 2;
}

# the difference of X from Y in % of Y
sub pct { ($_[0] - $_[1]) * 100 / $_[1] }

# The median, the interval that holds the true median with 95 %
# confidence whatever the distribution (sign test: from the k-th smallest
# to the k-th largest difference; none below 6 pairs), and the extremes.
sub spread {
    my @v = sort { $a <=> $b } @_;
    my $n = @v;
    my ($k, $cum, $p) = (0, 0, 0.5 ** $n);
    for my $j (0 .. $n) {
        $cum += $p;
        last if $cum > 0.025;
        $k = $j + 1;
        $p *= ($n - $j) / ($j + 1);
    }
    my $ci = $k ? sprintf("95 %% interval %+.1f .. %+.1f; ",
                          $v[$k - 1], $v[$n - $k])
                : "too few pairs for a 95 % interval; ";
    sprintf "median %+5.1f %% (%smin %+.1f, max %+.1f)",
            median(@v), $ci, $v[0], $v[-1];
}

# read_runs DIR: the runs' figures from DIR/results ("name req/s p50 p99
# non2xx") and DIR/cpu ("name nginx postgres others idle"), as
# { name => { rps, p50, p99, non2xx, nginx, pg, others } }
sub read_runs {
    my ($d) = @_;
    my %run;
    open my $r, "<", "$d/results" or die "$d/results: $!\n";
    while (<$r>) {
        my @f = split;
        @{$run{$f[0]}}{qw(rps p50 p99 non2xx)} = @f[1 .. 4];
    }
    open my $c, "<", "$d/cpu" or die "$d/cpu: $!\n";
    while (<$c>) {
        my @f = split;
        @{$run{$f[0]}}{qw(nginx pg others)} = @f[1 .. 3];
    }
    \%run;
}

1;
