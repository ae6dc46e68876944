/* stats.c — the statistics of a study (see stats.h). The Student t distribution comes from
 * the regularized incomplete beta function, evaluated by its continued fraction (modified
 * Lentz, as in Numerical Recipes and Cephes) except for the tail at df ≥ 30, where the
 * fraction loses digits and an asymptotic expansion (DiDonato and Morris) does not; the
 * quantile inverts the distribution by Newton's method on the logarithm of a probability,
 * inside a bracket that only shrinks.
 *
 * Accuracy is meant to be relative everywhere, in the tails and at the centre: for |t| the
 * tail P(T > |t|) and the centre P(0 < T < |t|) are each computed directly, neither as ½
 * minus the other, so a p-value of 1e−30 or the quantile of 0.5 + 1e−12 keeps its digits. */
#include "stats.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stddef.h>

/* From here on lgamma's argument is large enough for Stirling's series (below) to be exact
 * to rounding with the terms it has. */
#define STIRLING_FROM 10.0
/* Iterations of the continued fraction. Where it is used (everywhere but the tail at
 * df ≥ 30) it converges within 25 (measured over df from 0.1 to 10⁹); the limit is for
 * arguments nobody has measured. */
#define CONTINUED_FRACTION_ITERATIONS 1000
/* Steps of the quantile: 3 or 4 on average, at most 12 (measured over df from 0.1 to 10⁸
 * and probabilities down to 1e−14). A step that would leave the bracket bisects it
 * instead, gaining at least a bit of log s per step. */
#define QUANTILE_ITERATIONS 200
/* From this df/2 on, the tail comes from an asymptotic expansion (beta_tail_expansion). It
 * reaches rounding within 8 terms at a = 15 and fewer beyond (measured); EXPANSION_TERMS is
 * the limit TOMS 708 sets. */
#define LARGE_A 15.0
#define EXPANSION_TERMS 30
#define LOG_SQRT_2PI 0.91893853320467274178

/* lgamma(z) − ((z − ½)·ln z − z + ½·ln 2π), Stirling's series, for z ≥ STIRLING_FROM. */
static double stirling_correction(double z) {
  assert(z >= STIRLING_FROM);
  static const double coefficients[] = {1.0 / 12,   -1.0 / 360,       1.0 / 1260, -1.0 / 1680,
                                        1.0 / 1188, -691.0 / 360360, 1.0 / 156,  -3617.0 / 122400};
  double inverse_square = 1 / (z * z), sum = 0;
  for (int k = (int)(sizeof coefficients / sizeof coefficients[0]) - 1; k >= 0; k--)
    sum = sum * inverse_square + coefficients[k];
  return sum / z;
}

/* ln Γ(z) for z > 0. lgamma writes the global signgam; lgamma_r does not, and a study may
 * be computed on any thread. */
static double log_gamma(double z) {
  int sign;
  return lgamma_r(z, &sign);
}

/* ln Γ(large) − ln Γ(large + small) for large ≥ STIRLING_FROM. Taken from lgamma, it would
 * subtract two numbers near 6·10⁶ for df = 10⁶ and keep only 10 digits: here it comes from
 * Stirling's formula with the large terms cancelled on paper. */
static double log_gamma_ratio(double large, double small) {
  assert(large >= STIRLING_FROM && small > 0);
  return -(large - 0.5) * log1p(small / large) - small * log(large + small) + small + stirling_correction(large) -
         stirling_correction(large + small);
}

/* ln B(a, b). For the t distribution one argument is ½ and the other df/2. */
static double log_beta(double a, double b) {
  double small = a < b ? a : b, large = a < b ? b : a;
  if (large < STIRLING_FROM) return log_gamma(a) + log_gamma(b) - log_gamma(a + b);
  return log_gamma(small) + log_gamma_ratio(large, small);
}

/* The continued fraction of I_x(a, b) · a · B(a, b) / (xᵃ (1 − x)ᵇ), modified Lentz's
 * method: it converges quickly for x < (a + 1)/(a + b + 2). */
static double beta_continued_fraction(double a, double b, double x) {
  const double tiny = 1e-300; /* stands for a zero denominator, as Lentz prescribes */
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (fabs(d) < tiny) d = tiny;
  d = 1 / d;
  double fraction = d;
  for (int m = 1; m <= CONTINUED_FRACTION_ITERATIONS; m++) {
    double even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + even * d;
    c = 1 + even / c;
    if (fabs(d) < tiny) d = tiny;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    fraction *= d * c;
    double odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + odd * d;
    c = 1 + odd / c;
    if (fabs(d) < tiny) d = tiny;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    double change = d * c;
    fraction *= change;
    if (fabs(change - 1) <= 2 * DBL_EPSILON) return fraction;
  }
  assert(!"the incomplete beta continued fraction did not converge");
  return fraction;
}

/* I_x(a, b) and its complement 1 − I_x(a, b), given x and y = 1 − x and their logarithms,
 * each to full relative precision (a logarithm lives on where x underflows: the t
 * distribution's tail at s = 10²⁰⁰ is 10⁻²⁰⁰, though x = 1/s² is 0). The continued fraction
 * gives one of the two directly, to rounding, and the other is 1 minus it: on the side
 * where the fraction converges that one is the smaller part or not much larger, so the
 * subtraction loses at most a bit or two. */
static void incomplete_beta(double a, double b, double x, double y, double log_x, double log_y, double *value,
                            double *complement) {
  assert(a > 0 && b > 0 && x >= 0 && y >= 0);
  double front = exp(a * log_x + b * log_y - log_beta(a, b));
  if (x < (a + 1) / (a + b + 2)) {
    *value = front * beta_continued_fraction(a, b, x) / a;
    *complement = 1 - *value;
  } else {
    *complement = front * beta_continued_fraction(b, a, y) / b;
    *value = 1 - *complement;
  }
}

/* I_x(a, ½), given y = 1 − x, for a ≥ LARGE_A and x ≥ 0.7: the asymptotic expansion of DiDonato and Morris
 * (ACM TOMS 708, BGRAT, which SciPy's t distribution also uses), in terms of
 * Q(½, z) = erfc(√z). There the continued fraction would start from 1 − (a + b)x/(a + 1), a
 * difference of two numbers within 1e−6 of 1 at df = 10⁶, and lose 5 digits (measured:
 * 6e−11 relative error at df = 10⁶, 1e−9 at 10⁸). */
static double beta_tail_expansion(double a, double y) {
  assert(a >= LARGE_A && y <= 0.3);
  const double b = 0.5;
  double nu = a + 0.5 * (b - 1);
  double log_x = log1p(-y); /* y ≤ 0.3: from y, exact where x's rounding is not */
  double z = -nu * log_x;
  /* u = r / (Γ(a + b)/Γ(a) · ν^b) with r = e^−z z^b / Γ(b), in logarithms: r alone is
   * subnormal from z = 708 on, where the result is not yet. */
  double u = exp(-z + 0.5 * log(z / M_PI) - log_gamma_ratio(a, b) - b * log(nu));
  if (u == 0) return 0;
  /* j = Q(½, z)/r = √π e^z erfc(√z)/√z; from z = 500 erfc nears its underflow, and the
   * asymptotic series (1/z)·Σ (−1)^k (2k − 1)!!/(2z)^k is exact to rounding in 12 terms. */
  double j;
  if (z < 500) {
    j = erfc(sqrt(z)) * exp(z) * sqrt(M_PI / z);
  } else {
    double series = 1, term = 1;
    for (int k = 1; k <= 12; k++) {
      term *= -(2 * k - 1) / (2 * z);
      series += term;
    }
    j = series / z;
  }
  double quarter_inverse_nu_square = 0.25 / (nu * nu), quarter_log_x_square = 0.25 * log_x * log_x;
  double sum = j, power = 1, cn = 1, n2 = 0;
  double c[EXPANSION_TERMS + 1], d[EXPANSION_TERMS + 1];
  for (int n = 1; n <= EXPANSION_TERMS; n++) {
    double b_plus_n2 = b + n2;
    j = (b_plus_n2 * (b_plus_n2 + 1) * j + (z + b_plus_n2 + 1) * power) * quarter_inverse_nu_square;
    n2 += 2;
    power *= quarter_log_x_square;
    cn /= n2 * (n2 + 1);
    c[n] = cn;
    double convolution = 0, coefficient = b - n;
    for (int i = 1; i < n; i++, coefficient += b) convolution += coefficient * c[i] * d[n - i];
    d[n] = (b - 1) * cn + convolution / n;
    double term = d[n] * j;
    sum += term;
    assert(sum > 0);
    if (fabs(term) <= DBL_EPSILON * sum) break;
  }
  return u * sum;
}

/* For s ≥ 0, the two parts of ½ = P(T > 0): the tail P(T > s) and the centre P(0 < T < s). */
static void student_t_parts(double s, double df, double *tail, double *centre) {
  assert(s >= 0 && df > 0);
  if (isinf(df)) {
    *tail = 0.5 * erfc(s / M_SQRT2);
    *centre = 0.5 * erf(s / M_SQRT2);
    return;
  }
  if (s == 0 || isinf(s)) {
    *tail = s == 0 ? 0.5 : 0;
    *centre = 0.5 - *tail;
    return;
  }
  /* x = df/(df + s²) and y = s²/(df + s²), through a ratio that does not overflow, and their
   * logarithms from the same ratio: ln x as −ln(1 + s²/df) rather than from x, whose own
   * rounding a = df/2 would multiply, and ln(ratio) from s and df once the ratio underflows. */
  double x, y, log_x, log_y;
  if (s > sqrt(df)) {
    double ratio = df / s / s;
    x = ratio / (1 + ratio);
    y = 1 / (1 + ratio);
    log_y = -log1p(ratio);
    log_x = (ratio >= DBL_MIN ? log(ratio) : log(df) - 2 * log(s)) + log_y;
  } else {
    double ratio = s * s / df;
    x = 1 / (1 + ratio);
    y = ratio / (1 + ratio);
    log_x = -log1p(ratio);
    log_y = (ratio >= DBL_MIN ? log(ratio) : 2 * log(s) - log(df)) + log_x;
  }
  double a = df / 2, whole, part;
  if (a >= LARGE_A && x >= 0.7 && x < (a + 1) / (a + 2.5)) {
    /* the tail, where the continued fraction would give it directly */
    whole = beta_tail_expansion(a, y);
    part = 1 - whole;
  } else {
    incomplete_beta(a, 0.5, x, y, log_x, log_y, &whole, &part);
  }
  *tail = 0.5 * whole;
  *centre = 0.5 * part;
}

/* ln of the density at s. */
static double student_t_log_density(double s, double df) {
  if (isinf(df)) return -0.5 * s * s - LOG_SQRT_2PI;
  s = fabs(s);
  double log_1p_ratio = s > sqrt(df) ? 2 * log(s) - log(df) + log1p(df / s / s) : log1p(s * s / df);
  return -log_beta(df / 2, 0.5) - 0.5 * log(df) - (df + 1) / 2 * log_1p_ratio;
}

double stats_t_cdf(double t, double df) {
  if (isnan(t) || !(df > 0)) return NAN;
  double tail, centre;
  student_t_parts(fabs(t), df, &tail, &centre);
  return t < 0 ? tail : 0.5 + centre;
}

/* The s > 0 with P(T > s) = upper, for 0 < upper < ½. Newton's method on u = ln s, solving
 * ln P = ln target for the tail (upper < ¼) or for the centre (½ − upper, exact): each
 * probability is nearly a power of s where it is small, so the equation is nearly linear
 * in u from the far tail to the centre and Newton converges in a few steps from a rough
 * start. The bracket [low, high] of s only shrinks, and a step that would leave it
 * bisects it instead (geometrically: s spans hundreds of orders of magnitude). */
static double upper_quantile(double upper, double df) {
  assert(upper > 0 && upper < 0.5 && df > 0);
  int use_tail = upper < 0.25;
  double target = use_tail ? upper : 0.5 - upper;
  double log_target = log(target);
  double s, low = 0, high = INFINITY;
  if (use_tail) {
    /* The smaller of two starts: the normal quantile (Abramowitz & Stegun 26.2.23) with
     * the Cornish–Fisher terms of the t distribution, good for large df, and the power
     * law of the far tail, good for small df and, being an upper bound of the root, never
     * too low. */
    double w = sqrt(-2 * log(upper));
    double z = w - (2.515517 + w * (0.802853 + w * 0.010328)) / (1 + w * (1.432788 + w * (0.189269 + w * 0.001308)));
    s = z + (z * z * z + z) / (4 * df) + (z * (3 + z * z * (16 + 5 * z * z))) / (96 * df * df);
    if (!isinf(df)) {
      double power_law = sqrt(df) * exp(-(log(upper) + log(df) + log_beta(df / 2, 0.5)) / df);
      if (power_law < s) s = power_law;
      if (isinf(power_law)) {
        /* The root may be beyond DBL_MAX (1e−300 at df = 0.3 is 1e1000): then say so, and
         * otherwise keep the search within the doubles. */
        double tail, centre;
        student_t_parts(DBL_MAX, df, &tail, &centre);
        if (tail > upper) return INFINITY;
        high = DBL_MAX;
      }
    }
  } else {
    /* The centre grows like the density at 0 times s. */
    s = target * exp(-student_t_log_density(0, df));
  }
  for (int iteration = 0; iteration < QUANTILE_ITERATIONS; iteration++) {
    double tail, centre;
    student_t_parts(s, df, &tail, &centre);
    double probability = use_tail ? tail : centre;
    /* g(u) rises with u = ln s in both cases; its root is the quantile. */
    double g = use_tail ? log_target - log(probability) : log(probability) - log_target;
    if (g == 0) return s;
    if (g < 0)
      low = s;
    else
      high = s;
    double slope = exp(log(s) + student_t_log_density(s, df) - log(probability));
    double step = -g / slope;
    /* Converged: the step is within rounding of s, which already bounds the bracket. */
    if (fabs(step) <= 4 * DBL_EPSILON) return s * exp(step);
    double next = s * exp(step);
    if (!(next > low && next < high)) {
      if (low > 0 && high < INFINITY)
        next = low * sqrt(high / low);
      else
        next = g < 0 ? s * 8 : s / 8;
    }
    if (high <= low * (1 + 4 * DBL_EPSILON)) return next;
    s = next;
  }
  assert(!"the t quantile did not converge");
  return s;
}

double stats_t_quantile(double probability, double df) {
  if (!(probability >= 0 && probability <= 1) || !(df > 0)) return NAN;
  if (probability == 0) return -INFINITY;
  if (probability == 1) return INFINITY;
  /* 1 − probability is exact for probability ≥ ½ (Sterbenz). */
  double upper = probability < 0.5 ? probability : 1 - probability;
  if (upper == 0.5) return 0;
  double s = upper_quantile(upper, df);
  return probability < 0.5 ? -s : s;
}

/* Two-sided p-value of a t statistic. */
static double two_sided_p(double t, double df) {
  if (isnan(t)) return NAN;
  double tail, centre;
  student_t_parts(fabs(t), df, &tail, &centre);
  return 2 * tail;
}

/* a[i], or a[i] − b[i] when there is a b. */
static double element(const double *a, const double *b, int i) {
  return b != NULL ? a[i] - b[i] : a[i];
}

/* Mean and sample sd of the elements, n ≥ 1 (sd NaN for n = 1). Two passes, the second
 * correcting the mean by the mean deviation (its rounding) and the sum of squares by the
 * same term, as Chan, Golub and LeVeque recommend. Identical values give that value and
 * sd exactly 0: a sum's rounding would otherwise leave sd ≈ 1e−17 and turn "no spread"
 * into an enormous t. */
static void mean_and_sd(const double *a, const double *b, int n, double *mean, double *sd) {
  assert(n >= 1);
  double first = element(a, b, 0);
  int identical = 1;
  for (int i = 1; i < n && identical; i++) identical = element(a, b, i) == first;
  if (identical) {
    *mean = first;
    *sd = n > 1 ? 0 : NAN;
    return;
  }
  double sum = 0;
  for (int i = 0; i < n; i++) sum += element(a, b, i);
  double estimate = sum / n, deviations = 0, squares = 0;
  for (int i = 0; i < n; i++) {
    double deviation = element(a, b, i) - estimate;
    deviations += deviation;
    squares += deviation * deviation;
  }
  *mean = estimate + deviations / n;
  /* Not fmax(0, …): that would turn a NaN (a NaN among the values) into a spread of 0. */
  double variance = (squares - deviations * deviations / n) / (n - 1);
  *sd = n > 1 ? sqrt(variance < 0 ? 0 : variance) : NAN;
}

stats_summary_t stats_describe(const double *values, int n) {
  assert(n >= 0 && (n == 0 || values != NULL));
  stats_summary_t summary = {.n = n, .mean = NAN, .sd = NAN, .ci_low = NAN, .ci_high = NAN};
  if (n == 0) return summary;
  mean_and_sd(values, NULL, n, &summary.mean, &summary.sd);
  if (n < 2) return summary;
  double half_width = stats_t_quantile(0.975, n - 1) * summary.sd / sqrt(n);
  summary.ci_low = summary.mean - half_width;
  summary.ci_high = summary.mean + half_width;
  return summary;
}

stats_paired_t stats_paired(const double *a, const double *b, int n) {
  assert(n >= 0 && (n == 0 || (a != NULL && b != NULL)));
  stats_paired_t paired = {.n = n, .mean_diff = NAN, .ci_low = NAN, .ci_high = NAN, .t = NAN, .p = NAN};
  if (n == 0) return paired;
  double sd;
  mean_and_sd(a, b, n, &paired.mean_diff, &sd);
  if (n < 2) return paired;
  double standard_error = sd / sqrt(n);
  double half_width = stats_t_quantile(0.975, n - 1) * standard_error;
  paired.ci_low = paired.mean_diff - half_width;
  paired.ci_high = paired.mean_diff + half_width;
  if (standard_error == 0) {
    /* The limit of the test as the spread vanishes (stats.h); SciPy says NaN for 0/0. */
    paired.t = paired.mean_diff == 0 ? 0 : copysign(INFINITY, paired.mean_diff);
    paired.p = paired.mean_diff == 0 ? 1 : 0;
  } else {
    paired.t = paired.mean_diff / standard_error;
    paired.p = two_sided_p(paired.t, n - 1);
  }
  return paired;
}

/* Whether p[j] comes before p[i] in the step-down order: ties go by index, as a stable sort
 * would order them (tied p-values end with the same adjusted value either way). */
static int holm_precedes(const double *p, int j, int i) {
  return p[j] < p[i] || (p[j] == p[i] && j < i);
}

/* O(n²) without any storage but `adjusted`, so there is no maximum family size to document
 * or to overflow; a study compares tens of arms, and 500 p-values take a millisecond. */
void stats_holm(const double *p, int n, double *adjusted) {
  assert(n >= 0 && (n == 0 || (p != NULL && adjusted != NULL)));
  assert(n == 0 || adjusted != p); /* p is read after adjusted is written */
  int family = 0;
  for (int i = 0; i < n; i++) {
    assert(isnan(p[i]) || (p[i] >= 0 && p[i] <= 1));
    family += !isnan(p[i]);
  }
  /* Each p-value times the number of hypotheses still in the family at its rank. */
  for (int i = 0; i < n; i++) {
    if (isnan(p[i])) {
      adjusted[i] = NAN;
      continue;
    }
    int rank = 0;
    for (int j = 0; j < n; j++) rank += !isnan(p[j]) && holm_precedes(p, j, i);
    adjusted[i] = (family - rank) * p[i];
  }
  /* Then the step-down's running maximum, capped at 1. In place and in any order: a value
   * already replaced is the maximum over a prefix of i's own prefix, so it adds nothing. */
  for (int i = 0; i < n; i++) {
    if (isnan(p[i])) continue;
    double largest = adjusted[i];
    for (int j = 0; j < n; j++)
      if (!isnan(p[j]) && holm_precedes(p, j, i) && adjusted[j] > largest) largest = adjusted[j];
    adjusted[i] = largest < 1 ? largest : 1;
  }
}

/* NaN sorts after every number, so that a sort gives a total order. */
static int median_less(double a, double b) {
  return a < b || (isnan(b) && !isnan(a));
}

static void sift_down(double *values, int root, int end) {
  for (;;) {
    int child = 2 * root + 1;
    if (child >= end) return;
    if (child + 1 < end && median_less(values[child], values[child + 1])) child++;
    if (!median_less(values[root], values[child])) return;
    double swap = values[root];
    values[root] = values[child];
    values[child] = swap;
    root = child;
  }
}

/* Heapsort: in place, O(n log n) whatever the input, and no allocation (qsort may
 * allocate). */
double stats_median(double *values, int n) {
  assert(n >= 0 && (n == 0 || values != NULL));
  if (n == 0) return NAN;
  for (int root = n / 2 - 1; root >= 0; root--) sift_down(values, root, n);
  for (int end = n - 1; end > 0; end--) {
    double swap = values[0];
    values[0] = values[end];
    values[end] = swap;
    sift_down(values, 0, end);
  }
  if (isnan(values[n - 1])) return NAN;
  return n % 2 == 1 ? values[n / 2] : 0.5 * values[n / 2 - 1] + 0.5 * values[n / 2];
}
