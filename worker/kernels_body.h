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

/* `taps` (4, or 1 for the remainder) consecutive rows of col against one row d of dout:
 * dweight[t] += Σ_p d[p] · col[t][p]. Named accumulators (see gemm_tile): independent
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

/* A tile of the weight gradient dweight (rows × taps of it, ≤ 4 × 3) += dout's `rows` rows ·
 * col's `taps` rows, transposed: both run along P, so each of the twelve named
 * accumulators is a dot product over P (7 loads feed 12 FMAs per vector of P), summed lane
 * by lane at the end with the scalar tail: a fixed order. */
static inline __attribute__((always_inline)) void
KFN(weight_gradient_tile)(float *restrict dweight, size_t ldw, const float *restrict dout,
                          const float *restrict col, size_t stride, int rows, int taps, int P) {
  KFN(vec) a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0};
  KFN(vec) a20 = {0}, a21 = {0}, a22 = {0}, a30 = {0}, a31 = {0}, a32 = {0};
  const float *restrict d0 = dout, *restrict d1 = dout + (rows > 1 ? stride : 0);
  const float *restrict d2 = dout + (rows > 2 ? 2 * stride : 0), *restrict d3 = dout + (rows > 3 ? 3 * stride : 0);
  const float *restrict c0 = col, *restrict c1 = col + (taps > 1 ? stride : 0);
  const float *restrict c2 = col + (taps > 2 ? 2 * stride : 0);
  int p = 0;
  for (; p + KW <= P; p += KW) {
    const KFN(vec) x0 = KFN(load)(c0 + p), x1 = taps > 1 ? KFN(load)(c1 + p) : x0;
    const KFN(vec) x2 = taps > 2 ? KFN(load)(c2 + p) : x0;
    KFN(vec) y = KFN(load)(d0 + p);
    a00 += y * x0;
    if (taps > 1) a01 += y * x1;
    if (taps > 2) a02 += y * x2;
    if (rows > 1) {
      y = KFN(load)(d1 + p);
      a10 += y * x0;
      if (taps > 1) a11 += y * x1;
      if (taps > 2) a12 += y * x2;
    }
    if (rows > 2) {
      y = KFN(load)(d2 + p);
      a20 += y * x0;
      if (taps > 1) a21 += y * x1;
      if (taps > 2) a22 += y * x2;
    }
    if (rows > 3) {
      y = KFN(load)(d3 + p);
      a30 += y * x0;
      if (taps > 1) a31 += y * x1;
      if (taps > 2) a32 += y * x2;
    }
  }
  if (p < P && P >= KW) {
    /* The tail as one more vector ending at P, its lanes already counted zeroed in dout's
     * (a scalar tail of 4 per accumulator cost ~15% of the teacher's P = 196). */
    const int q = P - KW, skip = KW - (P - p);
    KFN(ivec) keep;
    for (int i = 0; i < KW; i++) keep[i] = i >= skip ? -1 : 0;
    const KFN(vec) x0 = KFN(load)(c0 + q), x1 = taps > 1 ? KFN(load)(c1 + q) : x0;
    const KFN(vec) x2 = taps > 2 ? KFN(load)(c2 + q) : x0;
    KFN(vec) y = (KFN(vec))((KFN(ivec))KFN(load)(d0 + q) & keep);
    a00 += y * x0;
    if (taps > 1) a01 += y * x1;
    if (taps > 2) a02 += y * x2;
    if (rows > 1) {
      y = (KFN(vec))((KFN(ivec))KFN(load)(d1 + q) & keep);
      a10 += y * x0;
      if (taps > 1) a11 += y * x1;
      if (taps > 2) a12 += y * x2;
    }
    if (rows > 2) {
      y = (KFN(vec))((KFN(ivec))KFN(load)(d2 + q) & keep);
      a20 += y * x0;
      if (taps > 1) a21 += y * x1;
      if (taps > 2) a22 += y * x2;
    }
    if (rows > 3) {
      y = (KFN(vec))((KFN(ivec))KFN(load)(d3 + q) & keep);
      a30 += y * x0;
      if (taps > 1) a31 += y * x1;
      if (taps > 2) a32 += y * x2;
    }
    p = P;
  }
  const KFN(vec) accs[4][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}, {a30, a31, a32}};
  for (int i = 0; i < rows; i++)
    for (int t = 0; t < taps; t++) {
      float sum = KFN(lanes_sum)(accs[i][t]);
      for (int r = p; r < P; r++) sum += dout[(size_t)i * stride + r] * col[(size_t)t * stride + r];
      dweight[(size_t)i * ldw + t] += sum;
    }
}

/* The rows [o, o + rows) of dweight over every tap: tiles of 3 taps, then 2 or 1. */
static inline __attribute__((always_inline)) void
KFN(weight_gradient_rows)(float *restrict dweight, const float *restrict dout,
                          const float *restrict col, int rows, int CKK, int P) {
  int k = 0;
  for (; k + 3 <= CKK; k += 3)
    KFN(weight_gradient_tile)(dweight + k, (size_t)CKK, dout, col + (size_t)k * P, (size_t)P, rows, 3, P);
  if (k + 2 <= CKK) {
    KFN(weight_gradient_tile)(dweight + k, (size_t)CKK, dout, col + (size_t)k * P, (size_t)P, rows, 2, P);
    k += 2;
  }
  if (k < CKK)
    KFN(weight_gradient_tile)(dweight + k, (size_t)CKK, dout, col + (size_t)k * P, (size_t)P, rows, 1, P);
}

/* dweight (OC, CKK) += dout (OC, P) · col (CKK, P)ᵀ: one example's weight gradient of a
 * convolution, from its output gradient and its im2col, neither transposed. Rows in fours,
 * then the remainder as one tile of 3, 2 or 1. */
static void KFN(conv_weight_gradient)(float *dweight, const float *dout, const float *col, int OC,
                                      int CKK, int P) {
  int o = 0;
  for (; o + 4 <= OC; o += 4)
    KFN(weight_gradient_rows)(dweight + (size_t)o * CKK, dout + (size_t)o * P, col, 4, CKK, P);
  const int rest = OC - o;
  float *dw = dweight + (size_t)o * CKK;
  const float *d = dout + (size_t)o * P;
  if (rest == 3) KFN(weight_gradient_rows)(dw, d, col, 3, CKK, P);
  if (rest == 2) KFN(weight_gradient_rows)(dw, d, col, 2, CKK, P);
  if (rest == 1) KFN(weight_gradient_rows)(dw, d, col, 1, CKK, P);
}

/* One tile of C = A·B (+ bias per row): `rows` (≤ 6) rows × `vecs` (1 or 2) vectors of
 * columns, all constants after inlining. Twelve named accumulators at most (GCC at -O2 kept
 * an array of them in memory); per k, `vecs` loads of B and `rows` broadcasts of A feed
 * rows × vecs FMAs. A(i,k) = A[i·a_row + k·a_col]. */
static inline __attribute__((always_inline)) void
KFN(gemm_tile)(float *restrict C, size_t ldc, const float *restrict A, size_t a_row, size_t a_col,
               const float *restrict B, size_t ldb, const float *restrict bias, int rows, int vecs,
               int K) {
  KFN(vec) c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  KFN(vec) c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  if (bias) {
    c00 = c01 = c00 + bias[0];
    if (rows > 1) c10 = c11 = c10 + bias[1];
    if (rows > 2) c20 = c21 = c20 + bias[2];
    if (rows > 3) c30 = c31 = c30 + bias[3];
    if (rows > 4) c40 = c41 = c40 + bias[4];
    if (rows > 5) c50 = c51 = c50 + bias[5];
  }
  for (int k = 0; k < K; k++) {
    const float *restrict b = B + (size_t)k * ldb;
    const float *restrict a = A + (size_t)k * a_col;
    const KFN(vec) b0 = KFN(load)(b), b1 = vecs > 1 ? KFN(load)(b + KW) : b0;
    float x = a[0];
    c00 += b0 * x;
    if (vecs > 1) c01 += b1 * x;
    if (rows > 1) {
      x = a[a_row];
      c10 += b0 * x;
      if (vecs > 1) c11 += b1 * x;
    }
    if (rows > 2) {
      x = a[2 * a_row];
      c20 += b0 * x;
      if (vecs > 1) c21 += b1 * x;
    }
    if (rows > 3) {
      x = a[3 * a_row];
      c30 += b0 * x;
      if (vecs > 1) c31 += b1 * x;
    }
    if (rows > 4) {
      x = a[4 * a_row];
      c40 += b0 * x;
      if (vecs > 1) c41 += b1 * x;
    }
    if (rows > 5) {
      x = a[5 * a_row];
      c50 += b0 * x;
      if (vecs > 1) c51 += b1 * x;
    }
  }
  const KFN(vec) first[6] = {c00, c10, c20, c30, c40, c50}, second[6] = {c01, c11, c21, c31, c41, c51};
  for (int i = 0; i < rows; i++) {
    KFN(store)(C + (size_t)i * ldc, first[i]);
    if (vecs > 1) KFN(store)(C + (size_t)i * ldc + KW, second[i]);
  }
}

/* Every row of C over `vecs` vectors of columns from column n: tiles of 6 rows, then one of
 * 4, 2 and 1 as the remainder needs (32 rows: 5 × 6 + 2; 64: 10 × 6 + 4). The columns' panel of B (K rows × vecs vectors) stays in L1 while the row tiles pass
 * over it; A's rows come from L2. */
static inline __attribute__((always_inline)) void
KFN(gemm_columns)(float *restrict C, size_t ldc, const float *restrict A, size_t a_row,
                  size_t a_col, const float *restrict B, size_t ldb, const float *restrict bias,
                  int M, int n, int vecs, int K) {
  int i = 0;
  for (; i + 6 <= M; i += 6)
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, 6, vecs, K);
  if (i + 4 <= M) {
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, 4, vecs, K);
    i += 4;
  }
  if (i + 2 <= M) {
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, 2, vecs, K);
    i += 2;
  }
  if (i < M)
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, 1, vecs, K);
}

/* Column panels of two vectors, one more of one vector, and the last partial vector
 * recomputed as a whole vector ending at column N (a tile overwrites C, so the overlap writes
 * the same values again). Narrower than a vector: scalar. */
static void KFN(gemm_unpacked)(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                               const float *B, size_t ldb, const float *bias, int M, int N, int K) {
  int n = 0;
  for (; n + 2 * KW <= N; n += 2 * KW) KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, M, n, 2, K);
  if (n + KW <= N) {
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, M, n, 1, K);
    n += KW;
  }
  if (n < N && N >= KW) {
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, M, N - KW, 1, K);
    n = N;
  }
  for (; n < N; n++)
    for (int i = 0; i < M; i++) {
      float sum = bias ? bias[i] : 0.0f;
      for (int k = 0; k < K; k++) sum += A[(size_t)i * a_row + (size_t)k * a_col] * B[(size_t)k * ldb + n];
      C[(size_t)i * ldc + n] = sum;
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

static void KFN(relu_backward)(float *dinp, const float *dout, const float *out, size_t n) {
  size_t i = 0;
  for (; i + KW <= n; i += KW) {
    const KFN(vec) d = KFN(load)(dout + i), o = KFN(load)(out + i);
    KFN(store)(dinp + i, KFN(load)(dinp + i) + (KFN(vec))((KFN(ivec))d & (o > 0.0f)));
  }
  for (; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

/* 2×2, stride 2. The four candidates of a window in row-major order, each replacing the
 * best so far only when strictly greater: a tie keeps the first, as maxpool_forward does.
 * Selects on values, not branches (which element wins is data). KW windows at a time: two
 * row vectors de-interleaved into their even and odd columns. */
#if KERNELS_WIDTH == 4
#define KERNELS_EVEN_LIST 0, 2, 4, 6
#define KERNELS_ODD_LIST 1, 3, 5, 7
#define KERNELS_LANES {0, 1, 2, 3}
#elif KERNELS_WIDTH == 8
#define KERNELS_EVEN_LIST 0, 2, 4, 6, 8, 10, 12, 14
#define KERNELS_ODD_LIST 1, 3, 5, 7, 9, 11, 13, 15
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7}
#else
#define KERNELS_EVEN_LIST 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define KERNELS_ODD_LIST 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define KERNELS_LANES {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#endif
/* The even or odd lanes of the 2·KW floats in (a, b): GCC's and clang's spellings. */
#if defined(__clang__)
#define KERNELS_EVEN(a, b) __builtin_shufflevector(a, b, KERNELS_EVEN_LIST)
#define KERNELS_ODD(a, b) __builtin_shufflevector(a, b, KERNELS_ODD_LIST)
#else
#define KERNELS_EVEN(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_EVEN_LIST})
#define KERNELS_ODD(a, b) __builtin_shuffle(a, b, (KFN(ivec)){KERNELS_ODD_LIST})
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
  const KFN(ivec) twice_lanes = (KFN(ivec))KERNELS_LANES * 2;
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
        KFN(vec) max = KERNELS_EVEN(t0, t1);
        KFN(ivec) best = at;
        KFN(take_greater)(&max, &best, KERNELS_ODD(t0, t1), at + 1);
        KFN(take_greater)(&max, &best, KERNELS_EVEN(b0, b1), at + W);
        KFN(take_greater)(&max, &best, KERNELS_ODD(b0, b1), at + W + 1);
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
#undef KERNELS_ODD
#undef KERNELS_EVEN_LIST
#undef KERNELS_ODD_LIST
#undef KERNELS_LANES

static const kernels_table_t KFN(kernels_table) = {
    .conv_few_taps_backward = KFN(conv_few_taps_backward),
    .maxpool2_forward = KFN(maxpool2_forward),
    .gemm_unpacked = KFN(gemm_unpacked),
    .conv_weight_gradient = KFN(conv_weight_gradient),
    .relu_forward = KFN(relu_forward),
    .relu_backward = KFN(relu_backward),
};

#undef KW
#undef KFN
#undef KERNELS_JOIN
#undef KERNELS_JOIN2
