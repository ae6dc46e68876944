/* kernels_body.h — the loops of kernels.h, written once on GCC's generic vectors of
 * KERNELS_WIDTH floats. kernels.c includes this file once per instruction set, under that
 * set's `#pragma GCC target`, with KERNELS_SUFFIX naming the copy: the same source becomes
 * SSE2, AVX2+FMA and AVX-512 code, so every path computes the same thing in the same order
 * (only FMA contraction and the vector width differ). Not a header to include elsewhere. */

#define KERNELS_JOIN2(a, b) a##_##b
#define KERNELS_JOIN(a, b) KERNELS_JOIN2(a, b)
#define KFN(name) KERNELS_JOIN(name, KERNELS_SUFFIX)
#define KW KERNELS_WIDTH

typedef float KFN(vec) __attribute__((vector_size(KERNELS_WIDTH * sizeof(float))));
typedef int32_t KFN(ivec) __attribute__((vector_size(KERNELS_WIDTH * sizeof(int32_t))));

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

/* Four output channels of one example (rows = 4; 1 for the remainder): out rows of P floats
 * = weight rows (CKK each) · col + bias. Four named accumulators, not an array: GCC at -O2
 * kept an array of them on the stack (a store and a load per FMA) rather than unroll. Every
 * column vector loaded feeds all four. */
static inline __attribute__((always_inline)) void
KFN(few_taps_rows)(float *restrict out, const float *restrict col, size_t col_stride,
                   const float *restrict weight, const float *restrict bias, int rows, int CKK,
                   int P) {
  const float *restrict w0 = weight, *restrict w1 = weight + (rows > 1 ? CKK : 0);
  const float *restrict w2 = weight + (rows > 2 ? 2 * CKK : 0);
  const float *restrict w3 = weight + (rows > 3 ? 3 * CKK : 0);
  int p = 0;
  for (; p + KW <= P; p += KW) {
    KFN(vec) acc0 = (KFN(vec)){0} + (bias ? bias[0] : 0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    if (rows == 4 && bias) {
      acc1 = (KFN(vec)){0} + bias[1];
      acc2 = (KFN(vec)){0} + bias[2];
      acc3 = (KFN(vec)){0} + bias[3];
    }
    for (int k = 0; k < CKK; k++) {
      const KFN(vec) c = KFN(load)(col + (size_t)k * col_stride + p);
      acc0 += c * w0[k];
      if (rows == 4) {
        acc1 += c * w1[k];
        acc2 += c * w2[k];
        acc3 += c * w3[k];
      }
    }
    KFN(store)(out + p, acc0);
    if (rows == 4) {
      KFN(store)(out + (size_t)P + p, acc1);
      KFN(store)(out + 2 * (size_t)P + p, acc2);
      KFN(store)(out + 3 * (size_t)P + p, acc3);
    }
  }
  for (; p < P; p++) {
    for (int j = 0; j < rows; j++) {
      float sum = bias ? bias[j] : 0.0f;
      for (int k = 0; k < CKK; k++) sum += col[(size_t)k * col_stride + p] * weight[j * CKK + k];
      out[(size_t)j * P + p] = sum;
    }
  }
}

static void KFN(conv_few_taps_forward)(float *out, const float *col, size_t col_stride,
                                       const float *weight, const float *bias, int B, int OC,
                                       int CKK, int P) {
  for (int b = 0; b < B; b++) {
    const float *col_b = col + (size_t)b * P;
    float *out_b = out + (size_t)b * OC * P;
    int o = 0;
    for (; o + 4 <= OC; o += 4)
      KFN(few_taps_rows)(out_b + (size_t)o * P, col_b, col_stride, weight + (size_t)o * CKK,
                         bias ? bias + o : NULL, 4, CKK, P);
    for (; o < OC; o++)
      KFN(few_taps_rows)(out_b + (size_t)o * P, col_b, col_stride, weight + (size_t)o * CKK,
                         bias ? bias + o : NULL, 1, CKK, P);
  }
}

/* `taps` (4, or 1 for the remainder) consecutive rows of col against one row d of dout:
 * dweight[t] += Σ_p d[p] · col[t][p]. Named accumulators (see few_taps_rows): independent
 * chains, so the FMAs overlap. */
static inline __attribute__((always_inline)) void
KFN(few_taps_dots)(float *restrict dweight, const float *restrict d, const float *restrict col,
                   size_t col_stride, int taps, int P) {
  const float *restrict c0 = col, *restrict c1 = col + (taps > 1 ? col_stride : 0);
  const float *restrict c2 = col + (taps > 2 ? 2 * col_stride : 0);
  const float *restrict c3 = col + (taps > 3 ? 3 * col_stride : 0);
  KFN(vec) acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0};
  int p = 0;
  for (; p + KW <= P; p += KW) {
    const KFN(vec) dv = KFN(load)(d + p);
    acc0 += dv * KFN(load)(c0 + p);
    if (taps == 4) {
      acc1 += dv * KFN(load)(c1 + p);
      acc2 += dv * KFN(load)(c2 + p);
      acc3 += dv * KFN(load)(c3 + p);
    }
  }
  const KFN(vec) accs[4] = {acc0, acc1, acc2, acc3};
  for (int t = 0; t < taps; t++) {
    float sum = KFN(lanes_sum)(accs[t]);
    for (int q = p; q < P; q++) sum += d[q] * col[(size_t)t * col_stride + q];
    dweight[t] += sum;
  }
}

static void KFN(conv_few_taps_backward)(float *dweight, float *dbias, const float *dout,
                                        const float *col, size_t col_stride, int B, int OC,
                                        int CKK, int P) {
  for (int b = 0; b < B; b++) {
    const float *col_b = col + (size_t)b * P;
    for (int o = 0; o < OC; o++) {
      const float *d = dout + ((size_t)b * OC + o) * P;
      float *dw = dweight + (size_t)o * CKK;
      int k = 0;
      for (; k + 4 <= CKK; k += 4) KFN(few_taps_dots)(dw + k, d, col_b + (size_t)k * col_stride, col_stride, 4, P);
      for (; k < CKK; k++) KFN(few_taps_dots)(dw + k, d, col_b + (size_t)k * col_stride, col_stride, 1, P);
      if (dbias) {
        KFN(vec) acc = {0};
        int p = 0;
        for (; p + KW <= P; p += KW) acc += KFN(load)(d + p);
        float sum = KFN(lanes_sum)(acc);
        for (; p < P; p++) sum += d[p];
        dbias[o] += sum;
      }
    }
  }
}

/* 2×2, stride 2. The four candidates of a window in row-major order, each replacing the
 * best so far only when strictly greater: a tie keeps the first, as maxpool_forward does.
 * Selects on values, not branches (which element wins is data). KW windows at a time: two
 * row vectors de-interleaved into their even and odd columns. */
#if KERNELS_WIDTH == 4
#define KERNELS_EVEN {0, 2, 4, 6}
#define KERNELS_LANES {0, 1, 2, 3}
#elif KERNELS_WIDTH == 8
#define KERNELS_EVEN {0, 2, 4, 6, 8, 10, 12, 14}
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7}
#else
#define KERNELS_EVEN {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#endif

/* Where v > max: max = v, best = at (a blend on the comparison's mask). */
static inline __attribute__((always_inline)) void KFN(take_greater)(KFN(vec) *max, KFN(ivec) *best,
                                                                   KFN(vec) v, KFN(ivec) at) {
  const KFN(ivec) greater = v > *max;
  *max = (KFN(vec))(((KFN(ivec))v & greater) | ((KFN(ivec))*max & ~greater));
  *best = (at & greater) | (*best & ~greater);
}

static void KFN(maxpool2_forward)(float *out, int32_t *argmax, const float *inp, size_t planes,
                                  int H, int W) {
  const int OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
  const KFN(ivec) even = KERNELS_EVEN, odd = even + 1, twice_lanes = (KFN(ivec))KERNELS_LANES * 2;
  for (size_t plane = 0; plane < planes; plane++) {
    const float *in = inp + plane * (size_t)H * W;
    for (int oh = 0; oh < OH; oh++) {
      const float *restrict top = in + (size_t)(2 * oh) * W, *restrict bottom = top + W;
      float *restrict o = out + (plane * OH + oh) * OW;
      int32_t *restrict a = argmax + (plane * OH + oh) * OW;
      const int32_t row = 2 * oh * W;
      /* Vectors of KW windows; the last one may overlap the one before (rewriting the same
       * values), so only a row narrower than KW windows takes the scalar loop. */
      int ow = 0;
      while (OW >= KW) {
        if (ow + KW > OW) ow = OW - KW;
        const KFN(vec) t0 = KFN(load)(top + 2 * ow), t1 = KFN(load)(top + 2 * ow + KW);
        const KFN(vec) b0 = KFN(load)(bottom + 2 * ow), b1 = KFN(load)(bottom + 2 * ow + KW);
        const KFN(ivec) at = twice_lanes + (row + 2 * ow);
        KFN(vec) max = __builtin_shuffle(t0, t1, even);
        KFN(ivec) best = at;
        KFN(take_greater)(&max, &best, __builtin_shuffle(t0, t1, odd), at + 1);
        KFN(take_greater)(&max, &best, __builtin_shuffle(b0, b1, even), at + W);
        KFN(take_greater)(&max, &best, __builtin_shuffle(b0, b1, odd), at + W + 1);
        KFN(store)(o + ow, max);
        memcpy(a + ow, &best, sizeof best);
        ow += KW;
        if (ow >= OW) break;
      }
      /* The select pattern GCC turns into conditional moves (a branch here mispredicted on
       * half the windows). */
      for (; ow < OW; ow++) {
        const int32_t at = row + 2 * ow;
        const int32_t candidates[4] = {at, at + 1, at + W, at + W + 1};
        float max = in[at];
        int32_t best = at;
        for (int i = 1; i < 4; i++) {
          const float v = in[candidates[i]];
          const int greater = v > max;
          max = greater ? v : max;
          best = greater ? candidates[i] : best;
        }
        o[ow] = max;
        a[ow] = best;
      }
    }
  }
}

#undef KERNELS_EVEN
#undef KERNELS_LANES

static const kernels_table_t KFN(kernels_table) = {
    .conv_few_taps_forward = KFN(conv_few_taps_forward),
    .conv_few_taps_backward = KFN(conv_few_taps_backward),
    .maxpool2_forward = KFN(maxpool2_forward),
};

#undef KW
#undef KFN
#undef KERNELS_JOIN
#undef KERNELS_JOIN2
