/* kernels_body.h — the loops of kernels.h, written once on GCC's generic vectors of
 * KERNELS_WIDTH floats. kernels.c includes this file once per instruction set, under that
 * set's `#pragma GCC target`, with KERNELS_SUFFIX naming the copy: the same source becomes
 * SSE2, AVX2+FMA and AVX-512 code, so every path computes the same thing in the same order
 * (only FMA contraction and the vector width differ). The matrix products are in
 * kernels_gemm_body.h, included below. Not a header to include elsewhere. */

#define KERNELS_JOIN2(a, b) a##_##b
#define KERNELS_JOIN(a, b) KERNELS_JOIN2(a, b)
#define KFN(name) KERNELS_JOIN(name, KERNELS_SUFFIX)
#define KW KERNELS_WIDTH

typedef float KFN(vec) __attribute__((vector_size(KERNELS_WIDTH * sizeof(float))));
typedef int32_t KFN(ivec) __attribute__((vector_size(KERNELS_WIDTH * sizeof(int32_t))));
typedef uint64_t KFN(u64vec) __attribute__((vector_size(KERNELS_WIDTH * sizeof(float))));

static inline __attribute__((always_inline)) KFN(vec) KFN(load)(const float *p) {
  KFN(vec) v;
  memcpy(&v, p, sizeof v); /* an unaligned load */
  return v;
}

static inline __attribute__((always_inline)) void KFN(store)(float *p, KFN(vec) v) {
  memcpy(p, &v, sizeof v);
}

/* Σ of the lanes, lane 0 first: a fixed order. */
static inline __attribute__((always_inline)) float KFN(lanes_sum)(KFN(vec) v) {
  float sum = 0.0f;
  for (int i = 0; i < KW; i++) sum += v[i];
  return sum;
}

/* Lane lists of the shuffles below, for each width. */
#if KERNELS_WIDTH == 4
#define KERNELS_EVEN_LIST 0, 2, 4, 6
#define KERNELS_ODD_LIST 1, 3, 5, 7
#define KERNELS_ZIP_LOW_LIST 0, 4, 1, 5
#define KERNELS_ZIP_HIGH_LIST 2, 6, 3, 7
#define KERNELS_LANES {0, 1, 2, 3}
#elif KERNELS_WIDTH == 8
#define KERNELS_EVEN_LIST 0, 2, 4, 6, 8, 10, 12, 14
#define KERNELS_ODD_LIST 1, 3, 5, 7, 9, 11, 13, 15
#define KERNELS_ZIP_LOW_LIST 0, 8, 1, 9, 2, 10, 3, 11
#define KERNELS_ZIP_HIGH_LIST 4, 12, 5, 13, 6, 14, 7, 15
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7}
#else
#define KERNELS_EVEN_LIST 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define KERNELS_ODD_LIST 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define KERNELS_ZIP_LOW_LIST 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define KERNELS_ZIP_HIGH_LIST 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#endif
/* The even or odd lanes of the 2·KW floats in (a, b), and their inverse: a's and b's lanes
 * interleaved, the first KW of them (low) or the last (high). GCC's and clang's spellings. */
#if defined(__clang__)
#define KERNELS_EVEN(a, b) __builtin_shufflevector(a, b, KERNELS_EVEN_LIST)
#define KERNELS_ODD(a, b) __builtin_shufflevector(a, b, KERNELS_ODD_LIST)
#define KERNELS_ZIP_LOW(a, b) __builtin_shufflevector(a, b, KERNELS_ZIP_LOW_LIST)
#define KERNELS_ZIP_HIGH(a, b) __builtin_shufflevector(a, b, KERNELS_ZIP_HIGH_LIST)
#else
#define KERNELS_EVEN(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_EVEN_LIST})
#define KERNELS_ODD(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_ODD_LIST})
#define KERNELS_ZIP_LOW(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_ZIP_LOW_LIST})
#define KERNELS_ZIP_HIGH(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_ZIP_HIGH_LIST})
#endif

/* `taps` (1 to 9, a constant after inlining) consecutive rows of col against one row d of
 * dout: dweight[t] += Σ_p d[p] · col[t][p], and *dbias += Σ_p d[p] unless dbias is NULL. One
 * pass over d for a 3×3 kernel on one channel, every sum its own chain (named accumulators,
 * see gemm_tile), so the FMAs overlap: taps of 4 then 1, and the bias apart, had read d three
 * times and left two sums on a single chain each (3.3% of cnn-teacher.json's step). */
static inline __attribute__((always_inline)) void
KFN(few_taps_dots)(float *restrict dweight, float *restrict dbias, const float *restrict d,
                   const float *restrict col, size_t col_stride, int taps, int P) {
#define KERNELS_TAP(t) const float *restrict c##t = col + (size_t)(taps > t ? t : 0) * col_stride
  KERNELS_TAP(0); KERNELS_TAP(1); KERNELS_TAP(2); KERNELS_TAP(3); KERNELS_TAP(4);
  KERNELS_TAP(5); KERNELS_TAP(6); KERNELS_TAP(7); KERNELS_TAP(8);
#undef KERNELS_TAP
  KFN(vec) acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0}, acc4 = {0}, acc5 = {0}, acc6 = {0};
  KFN(vec) acc7 = {0}, acc8 = {0}, bias = {0};
  int p = 0;
  for (; p + KW <= P; p += KW) {
    const KFN(vec) dv = KFN(load)(d + p);
    acc0 += dv * KFN(load)(c0 + p);
    if (taps > 1) acc1 += dv * KFN(load)(c1 + p);
    if (taps > 2) acc2 += dv * KFN(load)(c2 + p);
    if (taps > 3) acc3 += dv * KFN(load)(c3 + p);
    if (taps > 4) acc4 += dv * KFN(load)(c4 + p);
    if (taps > 5) acc5 += dv * KFN(load)(c5 + p);
    if (taps > 6) acc6 += dv * KFN(load)(c6 + p);
    if (taps > 7) acc7 += dv * KFN(load)(c7 + p);
    if (taps > 8) acc8 += dv * KFN(load)(c8 + p);
    if (dbias) bias += dv;
  }
  const KFN(vec) accs[9] = {acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8};
  for (int t = 0; t < taps; t++) {
    float sum = KFN(lanes_sum)(accs[t]);
    for (int q = p; q < P; q++) sum += d[q] * col[(size_t)t * col_stride + q];
    dweight[t] += sum;
  }
  if (dbias) {
    float sum = KFN(lanes_sum)(bias);
    for (int q = p; q < P; q++) sum += d[q];
    *dbias += sum;
  }
}

static void KFN(conv_few_taps_backward)(float *dweight, float *dbias, const float *dout,
                                        const float *col, size_t col_stride, int B, int OC,
                                        int CKK, int P) {
  for (int b = 0; b < B; b++) {
    const float *col_b = col + (size_t)b * P;
    for (int o = 0; o < OC; o++) {
      const float *d = dout + ((size_t)b * OC + o) * P;
      float *dw = dweight + (size_t)o * CKK, *db = dbias ? dbias + o : NULL;
      int k = 0;
      for (; k + 9 <= CKK; k += 9, db = NULL)
        KFN(few_taps_dots)(dw + k, db, d, col_b + (size_t)k * col_stride, col_stride, 9, P);
      const float *rest = col_b + (size_t)k * col_stride;
      switch (CKK - k) { /* a constant count of taps for each */
#define KERNELS_REST(n) case n: KFN(few_taps_dots)(dw + k, db, d, rest, col_stride, n, P); break;
        KERNELS_REST(1) KERNELS_REST(2) KERNELS_REST(3) KERNELS_REST(4)
        KERNELS_REST(5) KERNELS_REST(6) KERNELS_REST(7) KERNELS_REST(8)
#undef KERNELS_REST
      default: /* a multiple of nine: nothing left, the bias went with the first nine */
        break;
      }
    }
  }
}

/* The products (the convolutions' unpacked GEMM, the linear layers' packed one) and the
 * transposes: a file of their own, in this same copy. */
#include "kernels_gemm_body.h"

/* dst[0, n) = src[0, n) for n ≥ KW: whole vectors, then the last one ending at n (it writes
 * the overlap's values again). */
static inline __attribute__((always_inline)) void KFN(copy_row)(float *restrict dst,
                                                                const float *restrict src, int n) {
  int i = 0;
  for (; i + KW <= n; i += KW) KFN(store)(dst + i, KFN(load)(src + i));
  if (i < n) KFN(store)(dst + n - KW, KFN(load)(src + n - KW));
}

/* dst[0, n) += src[0, n) for n ≥ KW: whole vectors, then the last one ending at n with the
 * lanes already added kept as they are (selected bitwise, so nothing is added twice and no
 * −0 turns into +0). */
static inline __attribute__((always_inline)) void KFN(add_row)(float *restrict dst,
                                                               const float *restrict src, int n) {
  int i = 0;
  for (; i + KW <= n; i += KW) KFN(store)(dst + i, KFN(load)(dst + i) + KFN(load)(src + i));
  if (i < n) {
    const int q = n - KW, skip = KW - (n - i);
    KFN(ivec) keep;
    for (int lane = 0; lane < KW; lane++) keep[lane] = lane >= skip ? -1 : 0;
    const KFN(vec) old = KFN(load)(dst + q), sum = old + KFN(load)(src + q);
    KFN(store)(dst + q, (KFN(vec))(((KFN(ivec))sum & keep) | ((KFN(ivec))old & ~keep)));
  }
}

/* One tap's plane of a "same" convolution (stride 1, OH = H, OW = W): its output pixel i is
 * input pixel i + shift with shift = (ki − pad)·W + kj − pad, so the valid rows [first, end)
 * are one contiguous run of the input, clipped to the plane; what the clipping leaves out,
 * and what the run wraps from a neighbouring row, are the columns outside [lo, hi) that the
 * padding owns. */
typedef struct {
  int first, end;     /* output rows whose input row exists */
  int start, stop;    /* output pixels [start, stop) of the contiguous run */
  ptrdiff_t shift;    /* input pixel − output pixel */
  int lo, hi;         /* columns inside the input */
} KFN(same_tap_t);

static inline __attribute__((always_inline)) KFN(same_tap_t)
    KFN(same_tap)(int H, int W, int K, int pad, int ki, int kj) {
  KFN(same_tap_t) tap;
  const int rows = ki - pad;
  tap.first = rows < 0 ? -rows : 0;
  tap.end = rows > 0 ? H - rows : H;
  if (tap.end < tap.first) tap.end = tap.first;
  tap.shift = (ptrdiff_t)rows * W + kj - pad;
  const ptrdiff_t plane = (ptrdiff_t)H * W;
  ptrdiff_t start = (ptrdiff_t)tap.first * W, stop = (ptrdiff_t)tap.end * W;
  if (start + tap.shift < 0) start = -tap.shift;
  if (stop + tap.shift > plane) stop = plane - tap.shift;
  tap.start = (int)start;
  tap.stop = stop > start ? (int)stop : (int)start;
  kernels__valid_range(&tap.lo, &tap.hi, kj, W, W, 1, pad);
  (void)K;
  return tap;
}

/* im2col of one example: col (C·K·K, OH·OW; rows `ld` floats apart) from inp (C, H, W). Each row of col is a tap
 * (c, ki, kj); its part of output row oh is input row oh·stride − pad + ki from column
 * lo·stride − pad + kj on, zeros outside [lo, hi) (the padding). A "same" convolution copies
 * each tap as one run (same_tap); any other goes row by row, in vectors when the stride is
 * 1. One core, the teacher's second convolution (32 × 14 × 14, 3 × 3, padding 1, into L2):
 * a memcpy per row 28–29 µs an example, one run per tap 9.4 µs. */
static void KFN(im2col)(float *col, size_t ld, const float *inp, int C, int H, int W, int K,
                        int stride, int pad, int OH, int OW) {
  const size_t P = (size_t)OH * OW;
  const int same = stride == 1 && OH == H && OW == W;
  for (int c = 0; c < C; c++) {
    const float *plane = inp + (size_t)c * H * W;
    for (int ki = 0; ki < K; ki++) {
      for (int kj = 0; kj < K; kj++) {
        float *restrict dst = col + ((size_t)(c * K + ki) * K + kj) * ld;
        if (same) {
          const KFN(same_tap_t) tap = KFN(same_tap)(H, W, K, pad, ki, kj);
          for (int i = 0; i < tap.start; i++) dst[i] = 0.0f;
          if (tap.stop - tap.start >= KW)
            KFN(copy_row)(dst + tap.start, plane + tap.start + tap.shift, tap.stop - tap.start);
          else
            for (int i = tap.start; i < tap.stop; i++) dst[i] = plane[i + tap.shift];
          for (size_t i = (size_t)tap.stop; i < P; i++) dst[i] = 0.0f;
          for (int oh = tap.first; oh < tap.end; oh++) {
            for (int ow = 0; ow < tap.lo; ow++) dst[(size_t)oh * OW + ow] = 0.0f;
            for (int ow = tap.hi; ow < OW; ow++) dst[(size_t)oh * OW + ow] = 0.0f;
          }
          continue;
        }
        int lo, hi;
        kernels__valid_range(&lo, &hi, kj, W, OW, stride, pad);
        for (int oh = 0; oh < OH; oh++, dst += OW) {
          const int ih = oh * stride - pad + ki;
          if (ih < 0 || ih >= H) {
            for (int ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
            continue;
          }
          /* Input column of output column ow: base + ow·stride (≥ 0 from lo on). */
          const float *restrict row = plane + (ptrdiff_t)ih * W - pad + kj;
          for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
          if (stride == 1 && hi - lo >= KW)
            KFN(copy_row)(dst + lo, row + lo, hi - lo);
          else
            for (int ow = lo; ow < hi; ow++) dst[ow] = row[(ptrdiff_t)ow * stride];
          for (int ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
        }
      }
    }
  }
}

/* col2im of one example, im2col's adjoint: dinp (C, H, W) += each tap's row of col at the
 * input position im2col took it from; the padding's part goes nowhere. A "same" convolution
 * adds each tap as one run, after zeroing in col the padding's columns (which the run would
 * otherwise add onto a neighbouring row): col is the caller's scratch. */
static void KFN(col2im)(float *dinp, float *col, size_t ld, int C, int H, int W, int K, int stride,
                        int pad, int OH, int OW) {
  const int same = stride == 1 && OH == H && OW == W;
  for (int c = 0; c < C; c++) {
    float *plane = dinp + (size_t)c * H * W;
    for (int ki = 0; ki < K; ki++) {
      for (int kj = 0; kj < K; kj++) {
        float *restrict src = col + ((size_t)(c * K + ki) * K + kj) * ld;
        if (same) {
          const KFN(same_tap_t) tap = KFN(same_tap)(H, W, K, pad, ki, kj);
          for (int oh = tap.first; oh < tap.end; oh++) {
            for (int ow = 0; ow < tap.lo; ow++) src[(size_t)oh * OW + ow] = 0.0f;
            for (int ow = tap.hi; ow < OW; ow++) src[(size_t)oh * OW + ow] = 0.0f;
          }
          if (tap.stop - tap.start >= KW)
            KFN(add_row)(plane + tap.start + tap.shift, src + tap.start, tap.stop - tap.start);
          else
            for (int i = tap.start; i < tap.stop; i++) plane[i + tap.shift] += src[i];
          continue;
        }
        int lo, hi;
        kernels__valid_range(&lo, &hi, kj, W, OW, stride, pad);
        for (int oh = 0; oh < OH; oh++, src += OW) {
          const int ih = oh * stride - pad + ki;
          if (ih < 0 || ih >= H) continue;
          float *restrict row = plane + (ptrdiff_t)ih * W - pad + kj;
          if (stride == 1 && hi - lo >= KW)
            KFN(add_row)(row + lo, src + lo, hi - lo);
          else
            for (int ow = lo; ow < hi; ow++) row[(ptrdiff_t)ow * stride] += src[ow];
        }
      }
    }
  }
}

/* ReLU, forward and backward, with the comparison's mask: x > 0 keeps x's bits, anything
 * else (−0, NaN) gives +0, exactly as `x > 0 ? x : 0`. Here rather than in nn.c because GCC
 * at -O3 inlined nn.c's loop into nn_forward and compiled it scalar with a branch per element
 * (16.8% of a cnn-teacher run); a call through the table is never inlined. */
static void KFN(relu_forward)(float *out, const float *inp, size_t n) {
  size_t i = 0;
  for (; i + KW <= n; i += KW) {
    const KFN(vec) v = KFN(load)(inp + i);
    KFN(store)(out + i, (KFN(vec))((KFN(ivec))v & (v > 0.0f)));
  }
  for (; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

static void KFN(relu_backward)(float *dinp, const float *dout, const float *out, size_t n,
                               int accumulate) {
  size_t i = 0;
  for (; i + KW <= n; i += KW) {
    const KFN(vec) d = KFN(load)(dout + i), o = KFN(load)(out + i);
    const KFN(vec) kept = (KFN(vec))((KFN(ivec))d & (o > 0.0f));
    KFN(store)(dinp + i, accumulate ? KFN(load)(dinp + i) + kept : kept);
  }
  for (; i < n; i++) {
    const float kept = out[i] > 0.0f ? dout[i] : 0.0f;
    dinp[i] = accumulate ? dinp[i] + kept : kept;
  }
}

/* 2×2, stride 2. The four candidates of a window in row-major order, each replacing the
 * best so far only when strictly greater: a tie keeps the first, as maxpool_forward does.
 * Selects on values, not branches (which element wins is data). KW windows at a time: two
 * row vectors de-interleaved into their even and odd columns. */

/* Where v > max: max = v, best = at (a blend on the comparison's mask). */
static inline __attribute__((always_inline)) void KFN(take_greater)(KFN(vec) *max, KFN(ivec) *best,
                                                                   KFN(vec) v, KFN(ivec) at) {
  const KFN(ivec) greater = v > *max;
  *max = (KFN(vec))(((KFN(ivec))v & greater) | ((KFN(ivec))*max & ~greater));
  *best = (at & greater) | (*best & ~greater);
}

/* KW windows of a pair of rows, from the 2·KW floats at top and at bottom: their maxima
 * and argmaxes, `at` holding their top-left indices in the plane. */
static inline __attribute__((always_inline)) void
KFN(pool2_windows)(KFN(vec) *max, KFN(ivec) *best, const float *top, const float *bottom,
                   KFN(ivec) at, int W) {
  const KFN(vec) t0 = KFN(load)(top), t1 = KFN(load)(top + KW);
  const KFN(vec) b0 = KFN(load)(bottom), b1 = KFN(load)(bottom + KW);
  *max = KERNELS_EVEN(t0, t1);
  *best = at;
  KFN(take_greater)(max, best, KERNELS_ODD(t0, t1), at + 1);
  KFN(take_greater)(max, best, KERNELS_EVEN(b0, b1), at + W);
  KFN(take_greater)(max, best, KERNELS_ODD(b0, b1), at + W + 1);
}

static void KFN(maxpool2_forward)(float *out, int32_t *argmax, const float *inp, size_t planes,
                                  int H, int W) {
  const int OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
  const KFN(ivec) twice_lanes = (KFN(ivec))KERNELS_LANES * 2;
  for (size_t plane = 0; plane < planes; plane++) {
    const float *in = inp + plane * (size_t)H * W;
    for (int oh = 0; oh < OH; oh++) {
      const float *restrict top = in + (size_t)(2 * oh) * W, *restrict bottom = top + W;
      float *restrict o = out + (plane * OH + oh) * OW;
      int32_t *restrict a = argmax + (plane * OH + oh) * OW;
      const int32_t row = 2 * oh * W;
      KFN(vec) max;
      KFN(ivec) best;
      if (OW < KW) {
        /* Narrower than KW windows (a second convolution's 7 or 5): KW windows computed
         * from 2·KW floats of each row, which run on into the rows after (read, not used),
         * OW kept; near the end of the planes, from a copy of the row pair in zeros. A
         * scalar loop here took 6–10% of a cnn-teacher.json run (its selects became
         * branches at -O3, mispredicted on real images). */
        const float *from_top = top, *from_bottom = bottom;
        float top_copy[2 * KW] = {0}, bottom_copy[2 * KW] = {0};
        if ((size_t)(bottom - inp) + 2 * KW > planes * (size_t)H * W) {
          for (int i = 0; i < 2 * OW; i++) top_copy[i] = top[i], bottom_copy[i] = bottom[i];
          from_top = top_copy, from_bottom = bottom_copy;
        }
        KFN(pool2_windows)(&max, &best, from_top, from_bottom, twice_lanes + row, W);
        if ((plane * OH + oh) * OW + KW <= planes * (size_t)OH * OW) {
          /* Whole vectors, running into rows this call writes later (not past its planes:
           * another thread's may follow): 2 stores for 2·OW extracted lanes. */
          KFN(store)(o, max);
          memcpy(a, &best, sizeof best);
        } else {
          for (int i = 0; i < OW; i++) o[i] = max[i], a[i] = best[i];
        }
        continue;
      }
      /* Vectors of KW windows; the last one may overlap the one before (rewriting the same
       * values). */
      for (int ow = 0;;) {
        if (ow + KW > OW) ow = OW - KW;
        KFN(pool2_windows)(&max, &best, top + 2 * ow, bottom + 2 * ow, twice_lanes + (row + 2 * ow), W);
        KFN(store)(o + ow, max);
        memcpy(a + ow, &best, sizeof best);
        ow += KW;
        if (ow >= OW) break;
      }
    }
  }
}

/* dinp's planes (of plane floats) at each pooled value's argmax = dout where out > 0, +0
 * elsewhere (+= when `accumulate`): a select on bits, since GCC's select on floats was a
 * branch that mispredicted (which windows pass is data). */
static inline __attribute__((always_inline)) void
KFN(pool_relu_scatter)(float *dinp, const float *dout, const float *out, const int32_t *argmax,
                       size_t planes, size_t plane, size_t pooled, int accumulate) {
  for (size_t c = 0; c < planes; c++) {
    float *restrict d = dinp + c * plane;
    for (size_t j = c * pooled; j < (c + 1) * pooled; j++) {
      const float value = dout[j] + 0.0f;
      uint32_t bits;
      memcpy(&bits, &value, sizeof bits);
      bits &= -(uint32_t)(out[j] > 0.0f);
      float passed;
      memcpy(&passed, &bits, sizeof passed);
      if (accumulate)
        d[argmax[j]] += passed;
      else
        d[argmax[j]] = passed;
    }
  }
}

/* The gradient through a 2×2, stride-2 pool whose output went through a ReLU (conv2d.c's
 * epilogue when the ReLU's output is not stored): dinp (planes, H, W) = dout at each
 * window's argmax where out > 0, +0 everywhere else (+ 0.0f turns a −0 into +0, as adding
 * into zeros did). Every element written once, rows and columns no window covers included,
 * in place of zeroing dinp and scattering into it (a scalar loop at ~1.7 ns a pooled value
 * plus the memset: 4–5% of the CNN step). KW windows at a time: four candidates' values
 * selected on the argmax, interleaved back into the two rows' columns; 2.1–2.2× faster
 * than zeroing and scattering on the first convolution's 28×28 and 26×26 planes, 2× slower
 * on the second's 14×14 and 11×11 (rows of 7 and 5 windows, scalar), which scatter. */
static void KFN(maxpool2_relu_backward)(float *dinp, const float *dout, const float *out,
                                        const int32_t *argmax, size_t planes, int H, int W,
                                        int accumulate) {
  const int OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
  if (accumulate) { /* into a gradient a loss stored: one addition per window */
    KFN(pool_relu_scatter)(dinp, dout, out, argmax, planes, (size_t)H * W, (size_t)OH * OW, 1);
    return;
  }
  const KFN(ivec) twice_lanes = (KFN(ivec))KERNELS_LANES * 2;
  const size_t pooled = planes * (size_t)OH * OW, total = planes * (size_t)H * W;
  for (size_t plane = 0; plane < planes; plane++) {
    float *d = dinp + plane * (size_t)H * W;
    for (int oh = 0; oh < OH; oh++) {
      float *restrict top = d + (size_t)(2 * oh) * W, *restrict bottom = top + W;
      const size_t at_row = (plane * OH + oh) * OW;
      const float *restrict o = out + at_row, *restrict g = dout + at_row;
      const int32_t *restrict a = argmax + at_row;
      const int32_t row = 2 * oh * W;
      if (OW < KW && (at_row + KW > pooled || (size_t)(bottom - dinp) + 2 * KW > total)) {
        /* Narrower than a vector of windows near the end of the planes: zeroes, then one
         * store per window. */
        memset(top, 0, 2 * (size_t)W * sizeof *top);
        for (int i = 0; i < OW; i++) {
          const float value = g[i] + 0.0f;
          d[a[i]] = o[i] > 0.0f ? value : 0.0f;
        }
        continue;
      }
      /* Narrower than a vector of windows elsewhere (the first convolution's 14 on AVX-512,
       * the second's 7): one vector of windows running into the next row's, stored running
       * into the rows after: what the top row's stores put in the bottom row the bottom
       * row's rewrite, and what those put further the next pair (or the plane's odd last
       * row, or the next plane's first pair) rewrites after. */
      for (int ow = 0;;) { /* the last vector may overlap the one before, as in the forward */
        if (ow + KW > OW && OW >= KW) ow = OW - KW;
        KFN(ivec) best;
        memcpy(&best, a + ow, sizeof best);
        const KFN(ivec) passed = (KFN(ivec))(KFN(load)(g + ow) + 0.0f) & (KFN(load)(o + ow) > 0.0f);
        const KFN(ivec) at = twice_lanes + (row + 2 * ow);
        const KFN(ivec) v0 = passed & (best == at), v1 = passed & (best == at + 1);
        const KFN(ivec) v2 = passed & (best == at + W), v3 = passed & (best == at + W + 1);
        KFN(store)(top + 2 * ow, (KFN(vec))KERNELS_ZIP_LOW(v0, v1));
        KFN(store)(top + 2 * ow + KW, (KFN(vec))KERNELS_ZIP_HIGH(v0, v1));
        KFN(store)(bottom + 2 * ow, (KFN(vec))KERNELS_ZIP_LOW(v2, v3));
        KFN(store)(bottom + 2 * ow + KW, (KFN(vec))KERNELS_ZIP_HIGH(v2, v3));
        ow += KW;
        if (ow >= OW) break;
      }
      if (W > 2 * OW) top[W - 1] = bottom[W - 1] = 0.0f; /* an odd width's last column */
    }
    for (int h = 2 * OH; h < H; h++) /* an odd height's last row */
      for (int w = 0; w < W; w++) d[(size_t)h * W + w] = 0.0f;
  }
}

/* Dropout's forward (nn.h's dropout_forward, which calls this): mask (n) = 0 where the
 * element's draw falls below `threshold`, else `scale`, and out (n) = inp · mask. The draw
 * for element i is splitmix64's output function on key + (i + 1)·φ, its top 24 bits. The
 * scalar loop compiled the comparison as a branch that mispredicted on p of the elements
 * (5.5–6.4 ns an element, 2–4% of cnn-teacher.json's step); here KW/2 draws per 64-bit
 * vector (GCC builds the 64-bit products from 32-bit ones below AVX-512), masks narrowed to
 * the floats' lanes, the same bits in every set. */
#define KERNELS_PHI 0x9e3779b97f4a7c15ULL
static inline __attribute__((always_inline)) KFN(u64vec) KFN(dropout_draws)(KFN(u64vec) z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (z ^ (z >> 31)) >> 40;
}

static void KFN(dropout_forward)(float *out, float *mask, const float *inp, size_t n, uint64_t key,
                                 uint64_t threshold, float scale) {
  enum { HALF = KW / 2 };
  KFN(u64vec) low, high; /* key + (i + 1)·φ for the vector's first and second halves */
  for (int lane = 0; lane < HALF; lane++) {
    low[lane] = key + (uint64_t)(lane + 1) * KERNELS_PHI;
    high[lane] = key + (uint64_t)(lane + 1 + HALF) * KERNELS_PHI;
  }
  const uint64_t step = (uint64_t)KW * KERNELS_PHI;
  const KFN(ivec) scale_bits = (KFN(ivec))((KFN(vec)){0} + scale);
  const KFN(u64vec) limit = (KFN(u64vec)){0} + threshold;
  size_t i = 0;
  for (;; i += KW, low += step, high += step) {
    const KFN(ivec) dropped = KERNELS_EVEN((KFN(ivec))(KFN(dropout_draws)(low) < limit),
                                           (KFN(ivec))(KFN(dropout_draws)(high) < limit));
    const KFN(vec) m = (KFN(vec))(scale_bits & ~dropped);
    if (i + KW > n) { /* the last, partial vector: its first n − i lanes */
      for (size_t lane = 0; lane < n - i; lane++) {
        mask[i + lane] = m[lane];
        out[i + lane] = inp[i + lane] * m[lane];
      }
      return;
    }
    KFN(store)(mask + i, m);
    KFN(store)(out + i, KFN(load)(inp + i) * m);
  }
}
#undef KERNELS_PHI

/* Winograd F(2×2, 3×3) (Lavin and Gray, 2016) for conv2d.c's forward of a 3×3 convolution
 * of stride 1: each 2×2 block of outputs (a tile) from the 4×4 input patch under it, as
 * Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A, the sum over channels being 16 products (OC, C) · (C,
 * tiles), one for each place ξ = 4i + j of the transformed patch: 16 multiplications for 4
 * outputs where the direct convolution takes 36.
 *   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  Aᵀ = [1 1 1 0; 0 1 −1 −1]
 * V[ξ][c][t] and M[oc][ξ][t] hold rows `ld` floats apart over the TH × TW tiles, t = th·TW +
 * tw, that cover (OH, OW) (half of the last row and column of tiles lies outside when OH or
 * OW is odd). */

/* V from one example's input (C, H, W) with zero padding `pad`: each channel copied into
 * `work`'s zero-bordered plane (TH·2 + 2 rows of `pitch` floats), then per row of tiles Bᵀ d
 * on four whole rows at once, its columns split into even and odd (the four rows of each
 * after the plane, pitch / 2 floats), and · B on KW tiles at a time. A vector of tiles
 * reaching past the row's last writes into the next row's first tiles, which are written
 * after it (and V's rows hold T + KW floats for the last). */
static void KFN(winograd_input)(float *restrict V, size_t ld, float *restrict work, size_t pitch,
                                const float *restrict inp, int C, int H, int W, int pad, int TH,
                                int TW) {
  float *restrict plane = work, *restrict even = work + (size_t)(2 * TH + 2) * pitch;
  float *restrict odd = even + 2 * pitch;
  const size_t half = pitch / 2, xi_stride = (size_t)C * ld;
  const int vectors = (TW + KW - 1) / KW;
  const int width = ((2 * vectors * KW + 2) + 2 * KW - 1) / (2 * KW) * (2 * KW); /* ≤ pitch */
  memset(plane, 0, (size_t)(2 * TH + 2) * pitch * sizeof *plane);
  for (int c = 0; c < C; c++) {
    for (int h = 0; h < H; h++) { /* in vectors, as im2col's rows (kernels.c: no call per row) */
      float *restrict row = plane + (size_t)(h + pad) * pitch + pad;
      const float *restrict from = inp + ((size_t)c * H + h) * W;
      if (W >= KW)
        KFN(copy_row)(row, from, W);
      else
        for (int w = 0; w < W; w++) row[w] = from[w];
    }
    for (int th = 0; th < TH; th++) {
      const float *r0 = plane + (size_t)2 * th * pitch, *r1 = r0 + pitch, *r2 = r1 + pitch, *r3 = r2 + pitch;
      for (int q = 0; q < width; q += 2 * KW) {
        const KFN(vec) a0 = KFN(load)(r0 + q), a1 = KFN(load)(r1 + q), a2 = KFN(load)(r2 + q);
        const KFN(vec) a3 = KFN(load)(r3 + q), b0 = KFN(load)(r0 + q + KW);
        const KFN(vec) b1 = KFN(load)(r1 + q + KW), b2 = KFN(load)(r2 + q + KW), b3 = KFN(load)(r3 + q + KW);
        const KFN(vec) first[4] = {a0 - a2, a1 + a2, a2 - a1, a1 - a3};
        const KFN(vec) second[4] = {b0 - b2, b1 + b2, b2 - b1, b1 - b3};
        for (int i = 0; i < 4; i++) {
          KFN(store)(even + i * half + q / 2, KERNELS_EVEN(first[i], second[i]));
          KFN(store)(odd + i * half + q / 2, KERNELS_ODD(first[i], second[i]));
        }
      }
      for (int tw = 0; tw < TW; tw += KW) {
        float *restrict v = V + (size_t)c * ld + (size_t)th * TW + tw;
        for (int i = 0; i < 4; i++) {
          const KFN(vec) e0 = KFN(load)(even + i * half + tw), e1 = KFN(load)(even + i * half + tw + 1);
          const KFN(vec) o0 = KFN(load)(odd + i * half + tw), o1 = KFN(load)(odd + i * half + tw + 1);
          KFN(store)(v + (size_t)(4 * i + 0) * xi_stride, e0 - e1);
          KFN(store)(v + (size_t)(4 * i + 1) * xi_stride, o0 + e1);
          KFN(store)(v + (size_t)(4 * i + 2) * xi_stride, e1 - o0);
          KFN(store)(v + (size_t)(4 * i + 3) * xi_stride, o0 - o1);
        }
      }
    }
  }
}

/* One vector of tiles from m[ξ] (each KW tiles of M's rows): Aᵀ m A + bias, the tiles'
 * four outputs in y[0..3] (row 0 column 0, row 0 column 1, row 1 column 0, row 1 column 1). */
static inline __attribute__((always_inline)) void KFN(winograd_tiles)(KFN(vec) y[4], const float *m,
                                                                       size_t xi_stride, float bias) {
  KFN(vec) top[4], bottom[4];
  for (int j = 0; j < 4; j++) {
    const KFN(vec) m0 = KFN(load)(m + (size_t)j * xi_stride), m1 = KFN(load)(m + (size_t)(4 + j) * xi_stride);
    const KFN(vec) m2 = KFN(load)(m + (size_t)(8 + j) * xi_stride), m3 = KFN(load)(m + (size_t)(12 + j) * xi_stride);
    top[j] = m0 + m1 + m2;
    bottom[j] = m1 - m2 - m3;
  }
  y[0] = top[0] + top[1] + top[2] + bias;
  y[1] = top[1] - top[2] - top[3] + bias;
  y[2] = bottom[0] + bottom[1] + bottom[2] + bias;
  y[3] = bottom[1] - bottom[2] - bottom[3] + bias;
}

/* out (OC, OH, OW) = Aᵀ M A + bias (NULL: none): per channel the tiles' four outputs, KW tiles
 * at a time (the last vector ending at T; fewer than KW tiles in all go lane by lane), into
 * `work` as four rows of T + KW floats, then each output row zipped from two of them
 * (`work` after those) and copied, OW floats, into place. */
static void KFN(winograd_output)(float *restrict out, float *restrict work, const float *restrict M,
                                 size_t ld, const float *restrict bias, int OC, int OH, int OW,
                                 int TH, int TW) {
  const int T = TH * TW;
  const size_t xi_stride = ld, rows = (size_t)T + KW;
  float *restrict y = work, *restrict line = work + 4 * rows;
  for (int o = 0; o < OC; o++) {
    const float *m = M + (size_t)o * 16 * ld;
    const float b = bias ? bias[o] : 0.0f;
    KFN(vec) tile[4];
    if (T < KW) { /* a vector over what there is, read through a copy */
      float lanes[16][KW];
      memset(lanes, 0, sizeof lanes);
      for (int xi = 0; xi < 16; xi++) memcpy(lanes[xi], m + (size_t)xi * xi_stride, (size_t)T * sizeof(float));
      KFN(winograd_tiles)(tile, &lanes[0][0], KW, b);
      for (int k = 0; k < 4; k++) KFN(store)(y + k * rows, tile[k]);
    } else {
      for (int t = 0;; t += KW) {
        if (t + KW > T) t = T - KW;
        KFN(winograd_tiles)(tile, m + t, xi_stride, b);
        for (int k = 0; k < 4; k++) KFN(store)(y + k * rows + t, tile[k]);
        if (t + KW >= T) break;
      }
    }
    for (int h = 0; h < OH; h++) {
      const float *left = y + (size_t)(2 * (h & 1)) * rows + (size_t)(h / 2) * TW, *right = left + rows;
      for (int tw = 0; tw < TW; tw += KW) {
        const KFN(vec) l = KFN(load)(left + tw), r = KFN(load)(right + tw);
        KFN(store)(line + 2 * tw, KERNELS_ZIP_LOW(l, r));
        KFN(store)(line + 2 * tw + KW, KERNELS_ZIP_HIGH(l, r));
      }
      float *restrict dst = out + ((size_t)o * OH + h) * OW;
      if (OW >= KW)
        KFN(copy_row)(dst, line, OW);
      else
        for (int w = 0; w < OW; w++) dst[w] = line[w];
    }
  }
}

#undef KERNELS_EVEN
#undef KERNELS_ODD
#undef KERNELS_ZIP_LOW
#undef KERNELS_ZIP_HIGH
#undef KERNELS_EVEN_LIST
#undef KERNELS_ODD_LIST
#undef KERNELS_ZIP_LOW_LIST
#undef KERNELS_ZIP_HIGH_LIST
#undef KERNELS_LANES

static const kernels_table_t KFN(kernels_table) = {
    .conv_few_taps_backward = KFN(conv_few_taps_backward),
    .maxpool2_forward = KFN(maxpool2_forward),
    .gemm_unpacked = KFN(gemm_unpacked),
    .gemm_pack = KFN(gemm_pack),
    .transpose_matrix = KFN(transpose_matrix),
    .gemm_packed = KFN(gemm_packed),
    .relu_forward = KFN(relu_forward),
    .relu_backward = KFN(relu_backward),
    .im2col = KFN(im2col),
    .col2im = KFN(col2im),
    .dropout_forward = KFN(dropout_forward),
    .maxpool2_relu_backward = KFN(maxpool2_relu_backward),
    .winograd_input = KFN(winograd_input),
    .winograd_output = KFN(winograd_output),
};

#undef KW
#undef KFN
#undef KERNELS_JOIN
#undef KERNELS_JOIN2
