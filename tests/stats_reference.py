"""stats_reference.py — SciPy's figures for daemon/stats.c.

  python3 tests/stats_reference.py                 prints the reference table of tests/test_stats.c
  python3 tests/stats_reference.py --compare CLI   runs the built stats_cli (tests/stats_cli.c) on
                                                   hundreds of random cases (fixed seed) and compares
                                                   every figure with SciPy; exit status 1 on a miss

The references, and where they are not SciPy's own output, why:
  t CDF          scipy.stats.t.cdf
  t quantile     scipy.stats.t.ppf, then Newton steps on SciPy's own CDF until they stop moving
                 it: SciPy 1.10's stdtrit (cdflib) stops at a tolerance of about 1e-8 (t.cdf of
                 its t.ppf(0.975, 2) misses 0.975 by 7e-11), short of the 1e-9 compared here.
                 The tail is solved on t.sf; the centre P(0 < T < s) on t.cdf(s) - 0.5, or where
                 that would cancel (P < 1e-4), on scipy.special.betainc (df <= 100) or on its
                 first-order term f(0) s (P < 1e-9), exact to rounding there.
  describe       numpy mean, std(ddof=1); the interval mean +- t.ppf(0.975, n - 1) * sd / sqrt(n)
  paired         scipy.stats.ttest_rel (t, p) and the same interval on the differences. Where the
                 differences are all equal SciPy's 0/0 gives NaN; stats.h promises t = 0, p = 1
                 for a zero mean (and SciPy's own inf, 0 otherwise), and this script says so.
  holm           a plain implementation of statsmodels' multipletests(method="holm"), NaNs left
                 out of the family; statsmodels itself too when it is installed
  median         numpy.median
"""
import math
import subprocess
import sys
import warnings

import numpy as np
import scipy
from scipy import special, stats

TOLERANCE = 1e-9  # relative, for --compare


# ---------------------------------------------------------------------------------------
# References


def t_cdf(t, df):
    return float(stats.t.cdf(t, df))


def t_quantile(probability, df):
    """SciPy's t.ppf polished by Newton's method on ln P, P the tail or the centre."""
    if probability in (0.0, 1.0):
        return float(stats.t.ppf(probability, df))
    if probability == 0.5:
        return 0.0  # where SciPy's search stops near 7e-17
    upper = min(probability, 1.0 - probability)  # exact for probability >= 0.5
    use_tail = upper < 0.25
    target = upper if use_tail else 0.5 - upper
    if not use_tail and target < 1e-9 and math.isfinite(df):
        # P(0 < T < s) = f(0) s (1 - (df + 1) s^2 / (6 df) + ...): the second term is below
        # rounding here. f(0) from poch, exact to rounding where t.pdf's gammaln is not.
        density_at_0 = float(special.poch(df / 2, 0.5)) / math.sqrt(df * math.pi)
        s = target / density_at_0
        return -s if probability < 0.5 else s

    def probability_at(s):
        if use_tail:
            return float(stats.t.sf(s, df))
        if not math.isfinite(df):
            return 0.5 * float(special.erf(s / math.sqrt(2)))
        if df <= 100:  # betainc (Cephes) is exact to rounding there, and does not cancel
            return 0.5 * float(special.betainc(0.5, df / 2.0, s * s / (df + s * s)))
        assert target >= 1e-4, "no cancellation-free centre in SciPy for df > 100 and P < 1e-4"
        return float(stats.t.cdf(s, df)) - 0.5  # loses at most 1e-16 / 1e-4

    s = abs(float(stats.t.ppf(probability, df)))
    for _ in range(20):
        p = probability_at(s)
        slope = s * float(stats.t.pdf(s, df)) / p  # d ln P / d ln s, up to sign
        step = (math.log(p) - math.log(target)) / slope
        step = step if use_tail else -step
        s_next = s * math.exp(step)
        if s_next == s:
            break
        s = s_next
    return -s if probability < 0.5 else s


def describe(values):
    n = len(values)
    if n == 0:
        return [0, math.nan, math.nan, math.nan, math.nan]
    x = np.array(values, dtype=float)
    mean = float(np.mean(x))
    if n == 1:
        return [1, mean, math.nan, math.nan, math.nan]
    sd = float(np.std(x, ddof=1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return [n, mean, sd, mean - half, mean + half]


def paired(a, b):
    n = len(a)
    d = np.array(a, dtype=float) - np.array(b, dtype=float)
    if n == 0:
        return [0, math.nan, math.nan, math.nan, math.nan, math.nan]
    mean = float(np.mean(d))
    if n == 1:
        return [1, mean, math.nan, math.nan, math.nan, math.nan]
    if np.all(d == d[0]):
        # stats.h: the limit of the test as the spread vanishes. SciPy agrees for a nonzero
        # mean (its mean of equal values may round off them; the mean is that value).
        mean = float(d[0])
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
        return [n, mean, mean, mean, t, p]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(a, b)
    half = t_quantile(0.975, n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
    return [n, mean, mean - half, mean + half, float(result.statistic), float(result.pvalue)]


def holm(p):
    """statsmodels' multipletests(p, method="holm")[1], with NaN p-values out of the family."""
    adjusted = [math.nan] * len(p)
    kept = [i for i in range(len(p)) if not math.isnan(p[i])]
    order = sorted(kept, key=lambda i: p[i])  # stable: ties by index
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(order) - rank) * p[i])
        adjusted[i] = min(running, 1.0)
    return adjusted


def holm_statsmodels(p):
    """The same from statsmodels, or None where it is not installed."""
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        return None
    adjusted = [math.nan] * len(p)
    kept = [i for i in range(len(p)) if not math.isnan(p[i])]
    if kept:
        for i, value in zip(kept, multipletests([p[i] for i in kept], method="holm")[1]):
            adjusted[i] = float(value)
    return adjusted


def median(values):
    return float(np.median(values)) if len(values) else math.nan


# ---------------------------------------------------------------------------------------
# The fixed cases of tests/test_stats.c

CDF_CASES = [(t, df) for df in (1, 2, 3, 4.5, 29, 30, 31, 100, 1e6, math.inf)
             for t in (-1e10, -300, -40, -8, -2.5, -1, -1e-6, 0, 1e-12, 0.3, 1.7, 2, 12, 1e5)]
CDF_CASES += [(-3, 0.5), (1.5, 1e8), (-6, 1e8)]

QUANTILE_CASES = [(p, df) for df in (1, 2, 3, 4.5, 29, 30, 31, 100, 1e6, math.inf)
                  for p in (1e-12, 1e-9, 1e-6, 0.001, 0.025, 0.2, 0.25, 0.3, 0.5 - 1e-12, 0.5, 0.5 + 1e-12, 0.75,
                            0.975, 0.999, 1 - 1e-9, 1 - 1e-12)]
QUANTILE_CASES += [(0.975, n - 1) for n in range(2, 12)]


def study_values():
    rng = np.random.default_rng(20240612)
    accuracies = [round(float(v), 4) for v in rng.normal(0.87, 0.01, 30)]
    baselines = [round(float(v), 4) for v in rng.normal(0.86, 0.012, 30)]
    return accuracies, baselines


def describe_cases():
    accuracies, _ = study_values()
    return [
        [0.5, 0.75],                            # n = 2
        [0.8712, 0.8655, 0.8801],               # n = 3
        [0.91, 0.9, 0.925, 0.8875, 0.905],      # n = 5
        accuracies,                             # n = 30
        [-3.5, -1.25, -2.0, -0.5],              # negative
        [0.25, 0.25, 0.25, 0.25],               # all equal: sd exactly 0
        [1e9 + 0.5, 1e9 + 1.5, 1e9 + 2.25],     # a large offset, where a one-pass variance fails
        [0.86],                                 # n = 1
    ]


def paired_cases():
    accuracies, baselines = study_values()
    return [
        ([0.88, 0.86], [0.87, 0.84]),                                      # n = 2
        ([0.8712, 0.8655, 0.8801], [0.8601, 0.8622, 0.8705]),              # n = 3, positive
        ([0.85, 0.84, 0.86, 0.845, 0.852], [0.86, 0.851, 0.866, 0.853, 0.861]),  # n = 5, negative
        (accuracies, baselines),                                           # n = 30
        ([0.5, 0.25, 1.0], [0.25, 0.0, 0.75]),                             # all differences 0.25
        ([0.5, 0.25, 1.0], [0.75, 0.5, 1.25]),                             # all differences -0.25
        ([0.9, 0.8, 0.7], [0.9, 0.8, 0.7]),                                # zero mean, zero sd
        ([1.0, 2.0, 3.0, 4.0], [0.0, 3.0, 2.0, 5.0]),                      # zero mean, sd > 0
        ([0.6, 0.9, 0.4, 0.75, 0.8, 0.55], [0.1, 0.2, 0.05, 0.15, 0.3, 0.0]),  # p tiny
        ([0.87], [0.86]),                                                  # n = 1
    ]


HOLM_CASES = [
    [0.01, 0.04, 0.03, 0.005],
    [0.01, 0.04, math.nan, 0.03, 0.03],        # a NaN and a tie
    [0.02, 0.02, 0.02],                        # all tied
    [0.5, 0.6, 0.9, 0.7],                      # capped at 1
    [0.04, 0.001, 0.3, 0.0125, 0.0125, 0.2, 1.0, 0.0],
    [math.nan, math.nan],
    [0.03],
]

MEDIAN_CASES = [[3.0, 1.0, 2.0], [4.0, 1.0, 3.0, 2.0], [0.5], [-1.0, -1.0, 2.0, 7.0, -3.0],
                [0.91, 0.88, 0.905, 0.87, 0.92, 0.9]]


def c_number(x):
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(float(x))


def c_list(values, per_line=6):
    numbers = [c_number(v) for v in values]
    lines = [", ".join(numbers[i:i + per_line]) for i in range(0, len(numbers), per_line)]
    return "{" + ",\n      ".join(lines) + "}"


def print_table():
    out = []
    out.append("/* Generated by tests/stats_reference.py (SciPy %s, NumPy %s); run it to regenerate. */"
               % (scipy.__version__, np.__version__))
    out.append("static const struct reference_cdf reference_cdf[] = {")
    for t, df in CDF_CASES:
        out.append("    {%s, %s, %s}," % (c_number(t), c_number(df), c_number(t_cdf(t, df))))
    out.append("};")
    out.append("static const struct reference_quantile reference_quantile[] = {")
    for p, df in QUANTILE_CASES:
        out.append("    {%s, %s, %s}," % (c_number(p), c_number(df), c_number(t_quantile(p, df))))
    out.append("};")
    out.append("static const struct reference_describe reference_describe[] = {")
    for values in describe_cases():
        out.append("    {%d, %s,\n     %s}," % (len(values), c_list(values), c_list(describe(values)[1:])))
    out.append("};")
    out.append("static const struct reference_paired reference_paired[] = {")
    for a, b in paired_cases():
        out.append("    {%d, %s,\n     %s,\n     %s}," % (len(a), c_list(a), c_list(b), c_list(paired(a, b)[1:])))
    out.append("};")
    out.append("static const struct reference_holm reference_holm[] = {")
    for p in HOLM_CASES:
        out.append("    {%d, %s, %s}," % (len(p), c_list(p), c_list(holm(p))))
    out.append("};")
    out.append("static const struct reference_median reference_median[] = {")
    for values in MEDIAN_CASES:
        out.append("    {%d, %s, %s}," % (len(values), c_list(values), c_number(median(values))))
    out.append("};")
    print("\n".join(out))


# ---------------------------------------------------------------------------------------
# --compare: the built C code against SciPy, live


class Comparison:
    def __init__(self):
        self.count = 0
        self.failures = []
        self.worst = {}  # quantity -> (relative error, case)

    def check(self, quantity, case, expected, got, floor=0.0):
        """|got - expected| <= TOLERANCE * max(|expected|, floor); NaN and infinities must match."""
        self.count += 1
        if math.isnan(expected) or math.isinf(expected):
            ok = (math.isnan(expected) and math.isnan(got)) or expected == got
            error = 0.0 if ok else math.inf
        else:
            scale = max(abs(expected), floor)
            error = abs(got - expected) / scale if scale > 0 else abs(got - expected)
            ok = error <= TOLERANCE
        if error > self.worst.get(quantity, (-1.0, None))[0]:
            self.worst[quantity] = (error, case)
        if not ok:
            self.failures.append("%s %s: expected %r, got %r (relative error %.3g)" % (quantity, case, expected, got,
                                                                                     error))


def run_cli(cli, requests):
    text = "".join(requests)
    result = subprocess.run([cli], input=text, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        sys.exit("stats_cli failed (%d): %s" % (result.returncode, result.stderr))
    lines = result.stdout.splitlines()
    if len(lines) != len(requests):
        sys.exit("stats_cli answered %d lines to %d requests" % (len(lines), len(requests)))
    return [[float(x) for x in line.split()] for line in lines]


def compare(cli):
    rng = np.random.default_rng(12)
    comparison = Comparison()
    requests, checks = [], []

    def ask(request, check):
        requests.append(request + "\n")
        checks.append(check)

    def random_df():
        return float(rng.integers(1, 60)) if rng.random() < 0.4 else float(10 ** rng.uniform(0, 6))

    for _ in range(400):
        df = random_df()
        t = float(rng.choice([-1, 1]) * 10 ** rng.uniform(-4, 1.6))
        ask("cdf %r %r" % (t, df), lambda got, t=t, df=df: comparison.check("cdf", (t, df), t_cdf(t, df), got[0]))
    for _ in range(400):
        df = random_df()
        p = float(10 ** rng.uniform(-12, math.log10(0.5)))
        p = 1 - p if rng.random() < 0.5 else p
        ask("quantile %r %r" % (p, df),
            lambda got, p=p, df=df: comparison.check("quantile", (p, df), t_quantile(p, df), got[0]))
    for _ in range(200):
        n = int(rng.integers(2, 50))
        values = [float(v) for v in rng.normal(rng.normal(0, 2), rng.uniform(0.01, 1), n)]

        def check_describe(got, values=values):
            expected = describe(values)
            scale = float(np.mean(np.abs(values)))  # a mean is exact to rounding of its terms
            case = "n=%d" % len(values)
            comparison.check("describe n", case, expected[0], got[0])
            comparison.check("describe mean", case, expected[1], got[1], scale)
            comparison.check("describe sd", case, expected[2], got[2])
            comparison.check("describe ci", case, expected[3], got[3], scale)
            comparison.check("describe ci", case, expected[4], got[4], scale)

        ask("describe " + " ".join(repr(v) for v in values), check_describe)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        base = rng.normal(0.85, 0.03, n)
        effect = rng.normal(0, 0.02) * (10 ** rng.uniform(-1, 0.7))
        a = [float(v) for v in base + effect + rng.normal(0, rng.uniform(0.002, 0.02), n)]
        b = [float(v) for v in base + rng.normal(0, 0.01, n)]

        def check_paired(got, a=a, b=b):
            expected = paired(a, b)
            d = np.array(a) - np.array(b)
            scale = float(np.mean(np.abs(d)))
            standard_error = float(np.std(d, ddof=1)) / math.sqrt(len(d))
            case = "n=%d" % len(a)
            comparison.check("paired n", case, expected[0], got[0])
            comparison.check("paired mean_diff", case, expected[1], got[1], scale)
            comparison.check("paired ci", case, expected[2], got[2], scale)
            comparison.check("paired ci", case, expected[3], got[3], scale)
            comparison.check("paired t", case, expected[4], got[4], scale / standard_error)
            comparison.check("paired p", case, expected[5], got[5])

        ask("paired %d %s %s" % (n, " ".join(repr(v) for v in a), " ".join(repr(v) for v in b)), check_paired)
    for _ in range(150):
        n = int(rng.integers(1, 40))
        p = [float(v) for v in 10 ** rng.uniform(-6, 0, n)]
        for i in range(n):  # ties and NaNs
            if rng.random() < 0.15:
                p[i] = p[int(rng.integers(0, n))]
            if rng.random() < 0.1:
                p[i] = math.nan

        def check_holm(got, p=p):
            expected = holm(p)
            from_statsmodels = holm_statsmodels(p)
            for i, (e, g) in enumerate(zip(expected, got)):
                comparison.check("holm", "n=%d i=%d" % (len(p), i), e, g)
                if from_statsmodels is not None:
                    comparison.check("holm (statsmodels)", "n=%d i=%d" % (len(p), i), from_statsmodels[i], g)

        ask("holm " + " ".join(repr(v) for v in p), check_holm)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        values = [float(v) for v in np.round(rng.normal(0, 1, n), int(rng.integers(1, 4)))]  # ties
        ask("median " + " ".join(repr(v) for v in values),
            lambda got, values=values: comparison.check("median", "n=%d" % len(values), median(values), got[0]))

    answers = run_cli(cli, requests)
    assert answers, "no answers to compare"
    for check, got in zip(checks, answers):
        check(got)

    print("%d figures from %d requests compared with SciPy %s (tolerance %g relative)"
          % (comparison.count, len(requests), scipy.__version__, TOLERANCE))
    for quantity, (error, case) in sorted(comparison.worst.items()):
        print("  worst %-18s %.3g  %s" % (quantity, error, case))
    for failure in comparison.failures[:40]:
        print("FAIL " + failure)
    if comparison.failures:
        print("%d of %d figures differ" % (len(comparison.failures), comparison.count))
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2]))
    if len(sys.argv) == 1:
        print_table()
        sys.exit(0)
    sys.exit(__doc__)
