/* stats.h — the statistics a study reports: each arm's outcome with a 95% confidence
 * interval, each distillation arm against its matched baseline by a paired t-test over
 * seeds, and the Holm–Bonferroni adjustment over a study's comparisons.
 *
 * Pure functions over arrays of doubles: no allocation, no I/O, nothing of the daemon. The
 * Student t distribution is computed here (the regularized incomplete beta function) rather
 * than taken from a library: Debian has no small C one we would otherwise need. Every
 * figure is checked against SciPy in tests/test_stats.c and tests/test_study.py. */
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
 * t-test (scipy.stats.ttest_rel). n < 2 gives NaN for all but n and mean_diff; identical
 * differences (sd 0) give p = 0 when the mean differs from 0 and p = 1 when it is 0, as
 * the limit of the test. */
typedef struct {
  int n;
  double mean_diff;
  double ci_low, ci_high;
  double t, p;
} stats_paired_t;
stats_paired_t stats_paired(const double *a, const double *b, int n);

/* Holm–Bonferroni: adjusted[i] for p[i] over the n tests (statsmodels' multipletests
 * method "holm": step-down, monotone, capped at 1). NaN p-values are left out of the
 * family and stay NaN. */
void stats_holm(const double *p, int n, double *adjusted);

/* The Student t distribution with `df` degrees of freedom: its CDF, and the quantile
 * (inverse CDF) for a probability in (0, 1). */
double stats_t_cdf(double t, double df);
double stats_t_quantile(double probability, double df);

/* The median of `values` (sorted in place). NaN for n = 0. */
double stats_median(double *values, int n);

#endif
