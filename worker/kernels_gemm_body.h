/* kernels_gemm_body.h — the matrix products of kernels.h, part of kernels_body.h (which
 * includes it once per instruction set, KFN, KW and the shuffles defined): the register
 * tile and the unpacked GEMM the convolutions use, the KW × KW register transpose, and the
 * packed GEMM of the linear layers with its packing. Not a header to include elsewhere. */

/* One tile of C = A·B (+ bias per row): `rows` (≤ 6) rows × `vecs` (1 or 2) vectors of
 * columns, all constants after inlining, of which C has `cols` (vecs·KW, or fewer at a
 * packed operand's last panel, whose padding B has as zeros: those columns are computed and
 * not stored). Twelve named accumulators at most (GCC at -O2 kept an array of them in
 * memory); per k, `vecs` loads of B and `rows` broadcasts of A feed rows × vecs FMAs.
 * A(i,k) = A[i·a_row + k·a_col]. */
static inline __attribute__((always_inline)) void
KFN(gemm_tile)(float *restrict C, size_t ldc, const float *restrict A, size_t a_row, size_t a_col,
               const float *restrict B, size_t ldb, const float *restrict bias, int accumulate,
               int rows, int vecs, int cols, int K) {
  KFN(vec) c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  KFN(vec) c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  float edge[2 * KW]; /* a row of C narrower than the tile, through memory */
  if (bias) {
    c00 += bias[0], c01 += bias[0];
    if (rows > 1) c10 += bias[1], c11 += bias[1];
    if (rows > 2) c20 += bias[2], c21 += bias[2];
    if (rows > 3) c30 += bias[3], c31 += bias[3];
    if (rows > 4) c40 += bias[4], c41 += bias[4];
    if (rows > 5) c50 += bias[5], c51 += bias[5];
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
  /* C's old value joins after the chain, as BLAS's beta = 1 adds it: a second pass with
   * twice the operands then adds exactly twice the first's product, rounded once. */
  for (int i = 0; i < rows; i++) {
    float *restrict c = C + (size_t)i * ldc;
    if (cols == vecs * KW) {
      KFN(store)(c, accumulate ? KFN(load)(c) + first[i] : first[i]);
      if (vecs > 1) KFN(store)(c + KW, accumulate ? KFN(load)(c + KW) + second[i] : second[i]);
    } else {
      if (accumulate) memcpy(edge, c, (size_t)cols * sizeof(float));
      for (int j = 0; j < cols; j++) {
        const float product = j < KW ? first[i][j] : second[i][j - KW];
        c[j] = accumulate ? edge[j] + product : product;
      }
    }
  }
}

/* Every row of C over `vecs` vectors of columns from column n: tiles of 6 rows, then one of
 * 4, 2 and 1 as the remainder needs (32 rows: 5 × 6 + 2; 64: 10 × 6 + 4). The columns' panel of B (K rows × vecs vectors) stays in L1 while the row tiles pass
 * over it; A's rows come from L2. */
static inline __attribute__((always_inline)) void
KFN(gemm_columns)(float *restrict C, size_t ldc, const float *restrict A, size_t a_row,
                  size_t a_col, const float *restrict B, size_t ldb, const float *restrict bias,
                  int accumulate, int M, int n, int vecs, int cols, int K) {
  int i = 0;
  for (; i + 6 <= M; i += 6)
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, accumulate, 6, vecs, cols, K);
  if (i + 4 <= M) {
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, accumulate, 4, vecs, cols, K);
    i += 4;
  }
  if (i + 2 <= M) {
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, accumulate, 2, vecs, cols, K);
    i += 2;
  }
  if (i < M)
    KFN(gemm_tile)(C + (size_t)i * ldc + n, ldc, A + (size_t)i * a_row, a_row, a_col, B + n, ldb,
                   bias ? bias + i : NULL, accumulate, 1, vecs, cols, K);
}

/* Column panels of two vectors, one more of one vector, and the last partial vector
 * recomputed as a whole vector ending at column N (a tile that overwrites C writes the same
 * values again there; one that accumulates would add twice, so it leaves those columns to
 * the scalar loop). Narrower than a vector: scalar. More than a vector left, overwriting:
 * one panel of two vectors ending at N instead of two of one, whose 6 accumulators are 6
 * FMAs in flight where the FMA's latency (4 cycles) at two a cycle needs 8. */
static void KFN(gemm_unpacked)(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                               const float *B, size_t ldb, const float *bias, int accumulate,
                               int M, int N, int K) {
  int n = 0;
  for (; n + 2 * KW <= N; n += 2 * KW)
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, accumulate, M, n, 2, 2 * KW, K);
  if (n > 0 && N - n > KW && !accumulate) {
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, accumulate, M, N - 2 * KW, 2, 2 * KW, K);
    n = N;
  }
  if (n + KW <= N) {
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, accumulate, M, n, 1, KW, K);
    n += KW;
  }
  if (n < N && N >= KW && !accumulate) {
    KFN(gemm_columns)(C, ldc, A, a_row, a_col, B, ldb, bias, accumulate, M, N - KW, 1, KW, K);
    n = N;
  }
  for (; n < N; n++)
    for (int i = 0; i < M; i++) {
      float sum = bias ? bias[i] : 0.0f;
      for (int k = 0; k < K; k++) sum += A[(size_t)i * a_row + (size_t)k * a_col] * B[(size_t)k * ldb + n];
      C[(size_t)i * ldc + n] = accumulate ? C[(size_t)i * ldc + n] + sum : sum;
    }
}

/* KW × KW floats transposed in registers: log2(KW) rounds, each zipping row i with row
 * i + KW/2 (a round moves one bit of the column index into the row index). */
static inline __attribute__((always_inline)) void KFN(transpose)(KFN(vec) rows[KW]) {
#pragma GCC unroll 4
  for (int round = KW; round > 1; round /= 2) {
    KFN(vec) zipped[KW];
#pragma GCC unroll 8
    for (int i = 0; i < KW / 2; i++) {
      zipped[2 * i] = KERNELS_ZIP_LOW(rows[i], rows[i + KW / 2]);
      zipped[2 * i + 1] = KERNELS_ZIP_HIGH(rows[i], rows[i + KW / 2]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < KW; i++) rows[i] = zipped[i];
  }
}

/* dst (cols × rows) = srcᵀ (src rows × cols, both row-major): KW × KW blocks through the
 * register transpose, the edges element by element. */
static void KFN(transpose_matrix)(float *restrict dst, const float *restrict src, int rows, int cols) {
  int i0 = 0;
  for (; i0 + KW <= rows; i0 += KW) {
    int j0 = 0;
    for (; j0 + KW <= cols; j0 += KW) {
      KFN(vec) block[KW];
#pragma GCC unroll 16
      for (int i = 0; i < KW; i++) block[i] = KFN(load)(src + (size_t)(i0 + i) * cols + j0);
      KFN(transpose)(block);
#pragma GCC unroll 16
      for (int j = 0; j < KW; j++) KFN(store)(dst + (size_t)(j0 + j) * rows + i0, block[j]);
    }
    for (; j0 < cols; j0++)
      for (int i = i0; i < i0 + KW; i++) dst[(size_t)j0 * rows + i] = src[(size_t)i * cols + j0];
  }
  for (; i0 < rows; i0++)
    for (int j = 0; j < cols; j++) dst[(size_t)j * rows + i0] = src[(size_t)i0 * cols + j];
}

/* Panels [first, end) of B(k,n) = B[k·b_row + n·b_col] (K × N) for gemm_packed: panel p
 * holds columns [p·2KW, p·2KW + 2KW) as K rows of 2KW floats, zeros past N. B's rows
 * (b_col = 1) are copied a vector at a time; its columns (b_row = 1: a linear layer's
 * weights read as Wᵀ) KW × KW at a time through the transpose, KW rows of the source read
 * along memory. */
static void KFN(gemm_pack)(float *panels, const float *B, size_t b_row, size_t b_col, int K,
                           int N, int first, int end) {
  const int width = 2 * KW;
  for (int p = first; p < end; p++) {
    float *restrict panel = panels + (size_t)p * width * K;
    const int n0 = p * width, cols = N - n0 < width ? N - n0 : width;
    if (b_col == 1 && cols == width) {
      for (int k = 0; k < K; k++) {
        const float *restrict src = B + (size_t)k * b_row + n0;
        KFN(store)(panel + (size_t)k * width, KFN(load)(src));
        KFN(store)(panel + (size_t)k * width + KW, KFN(load)(src + KW));
      }
    } else if (b_row == 1) {
      for (int half = 0; half < 2; half++) {
        const int c0 = half * KW, n = cols - c0 < 0 ? 0 : cols - c0 > KW ? KW : cols - c0;
        const float *restrict src = B + (size_t)(n0 + c0) * b_col;
        int k = 0;
        for (; k + KW <= K; k += KW) {
          KFN(vec) rows[KW];
#pragma GCC unroll 16
          for (int j = 0; j < KW; j++) rows[j] = j < n ? KFN(load)(src + (size_t)j * b_col + k) : (KFN(vec)){0};
          KFN(transpose)(rows);
#pragma GCC unroll 16
          for (int t = 0; t < KW; t++) KFN(store)(panel + (size_t)(k + t) * width + c0, rows[t]);
        }
        for (; k < K; k++)
          for (int j = 0; j < KW; j++) panel[(size_t)k * width + c0 + j] = j < n ? src[(size_t)j * b_col + k] : 0.0f;
      }
    } else {
      for (int k = 0; k < K; k++)
        for (int j = 0; j < width; j++)
          panel[(size_t)k * width + j] = j < cols ? B[(size_t)k * b_row + (size_t)(n0 + j) * b_col] : 0.0f;
    }
  }
}

/* C (M rows of ldc floats, N columns) = A · B, or += when `accumulate`, with B in
 * gemm_pack's panels. K goes in blocks of 256, rows in blocks of 192: a panel's block (32
 * KiB at AVX-512) stays in L1 while the row tiles pass over it, A's block (192 KiB) in L2.
 * A panel of at most KW columns (the output layer's ten) takes one-vector tiles. */
static void KFN(gemm_packed)(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                             const float *panels, int accumulate, int M, int N, int K) {
  enum { depth_block = 256, row_block = 192, width = 2 * KW };
  for (int k0 = 0; k0 < K; k0 += depth_block) {
    const int depth = K - k0 < depth_block ? K - k0 : depth_block, add = accumulate || k0 > 0;
    for (int i0 = 0; i0 < M; i0 += row_block) {
      const int rows = M - i0 < row_block ? M - i0 : row_block;
      float *c = C + (size_t)i0 * ldc;
      const float *a = A + (size_t)i0 * a_row + (size_t)k0 * a_col;
      for (int n0 = 0; n0 < N; n0 += width) {
        const float *panel = panels + (size_t)n0 * K + (size_t)k0 * width;
        const int cols = N - n0 < width ? N - n0 : width;
        if (cols == width)
          KFN(gemm_columns)(c + n0, ldc, a, a_row, a_col, panel, width, NULL, add, rows, 0, 2, width, depth);
        else if (cols > KW)
          KFN(gemm_columns)(c + n0, ldc, a, a_row, a_col, panel, width, NULL, add, rows, 0, 2, cols, depth);
        else
          KFN(gemm_columns)(c + n0, ldc, a, a_row, a_col, panel, width, NULL, add, rows, 0, 1, cols, depth);
      }
    }
  }
}
