/* stats.h — the statistics a study reports: each arm's outcome with a 95% confidence
 * interval, each distillation arm against its matched baseline by a paired t-test over
 * seeds, and the Holm–Bonferroni adjustment over a study's comparisons.
 *
 * Pure functions over arrays of doubles: no allocation, no I/O, nothing of the daemon. The
 * Student t distribution is computed here (the regularized incomplete beta function) rather
 * than taken from a library: Debian has no small C one we would otherwise need. Every
 * figure is checked against SciPy: tests/test_stats.c holds a table of SciPy's values, and
 * the test test_stats_scipy (tests/stats_reference.py) compares hundreds of random cases
 * with SciPy itself. */
#ifndef MAPSAGE_STATS_H
#define MAPSAGE_STATS_H

/* n, mean, sample standard deviation (n − 1) and the 95% t interval of the mean. With n = 1
 * the sd and the interval are NaN (one value says nothing of spread); with n = 0 all are
 * NaN. */
typedef struct {
  int n;
  double mean, sd;
  double ci_low, ci_high;
} stats_summary_t;
stats_summary_t stats_describe(const double *values, int n);

/* A paired comparison of `a` against `b` (a[i] and b[i] share seed i): the mean of
 * a[i] − b[i], its 95% t interval, the t statistic and the two-sided p-value of a paired
 * t-test (scipy.stats.ttest_rel). n < 2 gives NaN for all but n and mean_diff (NaN too for
 * n = 0). Identical differences (sd 0, the interval a point) give t = ±∞ and p = 0 when
 * their mean differs from 0, as SciPy does, and t = 0, p = 1 when it is 0 — where SciPy
 * gives NaN (0/0): a comparison with no difference at all stays in the Holm family. */
typedef struct {
  int n;
  double mean_diff;
  double ci_low, ci_high;
  double t, p;
} stats_paired_t;
stats_paired_t stats_paired(const double *a, const double *b, int n);

/* Holm–Bonferroni: adjusted[i] for p[i] over the n tests (statsmodels' multipletests
 * method "holm": step-down, monotone, capped at 1). NaN p-values are left out of the
 * family and stay NaN. `adjusted` is another array than `p`. O(n²), with no limit on n. */
void stats_holm(const double *p, int n, double *adjusted);

/* The Student t distribution with `df` degrees of freedom (any df > 0, +∞ the normal): its
 * CDF, and the quantile (inverse CDF) for a probability in [0, 1] (±∞ at 0 and 1). Both
 * relative to 1e−12 or better, in either tail and near the centre (measured against SciPy
 * for df up to 10⁸). NaN for arguments outside those ranges. */
double stats_t_cdf(double t, double df);
double stats_t_quantile(double probability, double df);

/* The median of `values` (sorted in place, NaNs last). NaN for n = 0 or if any value is
 * NaN. */
double stats_median(double *values, int n);

#endif
