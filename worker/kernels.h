/* kernels.h — the hand-vectorised inner loops of worker/nn.c that OpenBLAS does not cover
 * well, compiled once per instruction set (portable, AVX2+FMA, AVX-512) from one source
 * (kernels_body.h) and chosen at run time: the best the CPU supports, or the one the
 * environment forces with MAPSAGE_KERNELS=portable|avx2|avx512 (the test suite runs every
 * one the machine has). nn.c calls these; they touch only the buffers given, never
 * allocate, and give the same bits run to run on one path (a fixed summation order). */
#ifndef MAPSAGE_KERNELS_H
#define MAPSAGE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KERNELS_PORTABLE, KERNELS_AVX2, KERNELS_AVX512, KERNELS_COUNT } kernels_isa_t;

#define KERNELS_ENV "MAPSAGE_KERNELS"

/* "portable", "avx2", "avx512". */
const char *kernels_isa_name(kernels_isa_t isa);
/* Whether this CPU (and its OS) runs the set, and whether this build has it at all. */
int kernels_isa_supported(kernels_isa_t isa);
/* The widest set the CPU supports. */
kernels_isa_t kernels_isa_best(void);
/* Switches every kernel to `isa`: 0, or -ENOTSUP when the CPU lacks it. */
int kernels_use(kernels_isa_t isa);
/* The set in use (chosen on first use if nobody chose: MAPSAGE_KERNELS, else the best). */
kernels_isa_t kernels_current(void);
/* Applies MAPSAGE_KERNELS if set (else the best set): 0, or -EINVAL with the variable, its
 * value and the reason in `error` (an unknown name, or a set this CPU lacks). The worker
 * calls it at start; on failure the set in use is the best one. */
int kernels_use_from_env(char *error, size_t error_size);
/* Floats per vector of the set: 4, 8, 16. */
int kernels_isa_width(kernels_isa_t isa);

/* The weight gradient of a convolution with few taps (C·K·K small: the first layer), from
 * im2col columns: col holds CKK rows of `col_stride` floats, the B examples here being the
 * B·P columns from col's start (B = 1 with col_stride = P: one example's col). */
/* dout (B,OC,P) -> dweight (OC,CKK) += dout · colᵀ, dbias (OC) +=
 * Σ dout (may be NULL). */
void kernels_conv_few_taps_backward(float *dweight, float *dbias, const float *dout,
                                    const float *col, size_t col_stride, int B, int OC, int CKK,
                                    int P);

/* C (M rows of ldc floats, the first N columns) = A · B + bias (per row; NULL: none), or
 * C += A · B + bias when `accumulate`, without packing: A(i,k) = A[i·a_row + k·a_col] (either
 * orientation of a row-major matrix), B holds K rows of ldb floats. Register tiles of 6 rows
 * × 2 vectors, read straight from B: for the convolutions' products, whose B (one example's
 * im2col columns, or its transposed output gradient) is in cache, this skips OpenBLAS's
 * packing and its zeroing of C, and writes NCHW directly. */
void kernels_gemm_unpacked(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                           const float *B, size_t ldb, const float *bias, int accumulate, int M,
                           int N, int K);

/* The linear layers' products (nn.c, where OpenBLAS's kernel set is narrower than ours):
 * B(k,n) = B[k·b_row + n·b_col] (K × N; b_col = 1 reads B's rows, b_row = 1 its columns,
 * as a layer's weights (OUT, IN) are read for the forward's Wᵀ) packed into panels of two
 * vectors of columns, each K rows long and zero-padded past N, then C (M rows of ldc floats,
 * N columns) = A · B, or += when `accumulate`, A(i,k) = A[i·a_row + k·a_col], in
 * kernels_gemm_unpacked's register tiles with K and the rows blocked for L1 and L2.
 * kernels_gemm_pack writes panels [first, end) of the kernels_gemm_panels(N) there are (threads
 * split them); the panels of the widest set, ⌈N/32⌉·32·K floats (cfg_dense_panel_floats),
 * hold any set's. Pack and product must run on the same set. */
int kernels_gemm_panels(int N);
void kernels_gemm_pack(float *panels, const float *B, size_t b_row, size_t b_col, int K, int N,
                       int first, int end);
void kernels_gemm_packed(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                         const float *panels, int accumulate, int M, int N, int K);

/* dst (cols × rows) = srcᵀ, src rows × cols, both row-major and apart: a convolution's
 * output gradient per example (OC × P) for its weight gradient's product (conv2d.c). */
void kernels_transpose(float *dst, const float *src, int rows, int cols);

/* One example's im2col, col (C·K·K, OH·OW) from inp (C, H, W) with zero padding `pad`, and
 * its adjoint col2im, dinp (C, H, W) += col's taps at their input positions (conv2d.c). Row
 * t of col (tap t) starts at col + t·ld (ld ≥ OH·OW; the floats between rows are neither
 * written nor read). A "same" convolution (stride 1, OH = H, OW = W) moves each tap as one
 * contiguous run; other shapes go row by row, in vectors when the stride is 1. col2im may
 * overwrite col's padding entries (it zeroes them): col is the caller's scratch. */
void kernels_im2col(float *col, size_t ld, const float *inp, int C, int H, int W, int K, int stride,
                    int pad, int OH, int OW);
void kernels_col2im(float *dinp, float *col, size_t ld, int C, int H, int W, int K, int stride,
                    int pad, int OH, int OW);

/* ReLU: out (n) = max(0, inp), and dinp (n) += dout where out > 0 (nn.h's relu_forward and
 * relu_backward, which call these), or dinp = dout there and 0 elsewhere when not
 * `accumulate` (dinp may then be dout itself). */
void kernels_relu_forward(float *out, const float *inp, size_t n);
void kernels_relu_backward(float *dinp, const float *dout, const float *out, size_t n,
                           int accumulate);

/* Dropout (nn.h's dropout_forward, which calls this): mask (n) = 0 where element i's draw,
 * the top 24 bits of splitmix64's output function on key + (i + 1)·0x9e3779b97f4a7c15, is
 * below `threshold`, else `scale`; out (n) = inp · mask. */
void kernels_dropout_forward(float *out, float *mask, const float *inp, size_t n, uint64_t key,
                             uint64_t threshold, float scale);

/* Max-pool with a 2×2 window and stride 2 over `planes` planes of H×W, with maxpool_forward's
 * semantics (argmax in the plane, the first maximum in row-major order wins a tie). */
void kernels_maxpool2_forward(float *out, int32_t *argmax, const float *inp, size_t planes, int H,
                              int W);

/* The gradient through that pool when a ReLU came after it (or before it: the same, see
 * conv2d.c): dinp (planes, H, W) = dout (planes, OH, OW) at each window's argmax where out
 * > 0, +0 everywhere else, every element of dinp written; or, when `accumulate`, dinp +=
 * that (relu_backward's two modes). */
void kernels_maxpool2_relu_backward(float *dinp, const float *dout, const float *out,
                                    const int32_t *argmax, size_t planes, int H, int W,
                                    int accumulate);

/* Winograd F(2×2, 3×3)'s transforms for the forward of a 3×3 convolution of stride 1
 * (conv2d.c, which makes the weights' and runs the 16 products between these): V[ξ][c][t]
 * (rows `ld` ≥ TH·TW + 16 floats apart) from one example's input (C, H, W) with zero padding
 * `pad`, and out (OC, OH, OW) = Aᵀ M A + bias (NULL: none) from M[oc][ξ][t] (the same rows:
 * each channel's 16 together, read as one block),
 * over the TH × TW tiles of 2 × 2 outputs that cover (OH, OW). `work` holds what
 * cfg_conv_winograd_work_floats counts; `pitch` is cfg_conv_winograd_pitch(TW). */
void kernels_winograd_input(float *V, size_t ld, float *work, size_t pitch, const float *inp, int C,
                            int H, int W, int pad, int TH, int TW);
void kernels_winograd_output(float *out, float *work, const float *M, size_t ld, const float *bias,
                             int OC, int OH, int OW, int TH, int TW);

#endif
