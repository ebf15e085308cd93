"""A fused criss-cross attention for the CPU: the same function as models.cca's bmm formulation,
computed by oneDNN's GEMM (dnnl_sgemm) on per-row and per-column slices, both cores in use.

Jittor's batched matmul on the CPU is a single-threaded loop that never reaches oneDNN; here each
of the operator's small matrix products runs as one sgemm call, the calls spread over OpenMP
threads. Layouts, for B images, C' = query channels, C = value channels:

    att_row [B, H, W, W]   att_row[b, h, w, j] = A for pixel (h, w) at row position (h, j)
    att_col [B, W, H, H]   att_col[b, w, h, i] = A for pixel (h, w) at column position (i, w),
                           0 where i == h (the centre belongs to the row term only)

so the backward keeps only the attention, (H + W) x H x W values per image (one plane more than
the H + W - 1 positions, for contiguous GEMM operands), besides q, k, v. Column products work on
copies of q, k, v (and gradients) transposed to [.., W, H], made inside the kernel.

The module's last step, gamma * out + x, is a kernel here too: its backward's d gamma = sum(out * dy)
over the whole map is otherwise one of Jittor's single-core reductions.

Only for float32 with oneDNN loaded (Jittor's `use_mkl`); models.cca falls back otherwise.
"""
import jittor_env  # noqa: F401
import jittor as jt

HEADER = r"""
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <vector>
#include "mem/allocator.h"
extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

// Working space from Jittor's caching allocator: reused from call to call, where std::vector took
// fresh pages from the C library and zero-filled them. Each buffer is written in full before it is read.
struct Scratch {
    jittor::Allocation block;
    explicit Scratch(int64_t floats) : block(jittor::get_allocator(), floats * sizeof(float)) {}
    float *data() { return static_cast<float *>(block.ptr); }
};

// dst[n][c][w][h] = src[n][c][h][w] for `planes` = n * c planes of H x W.
static void transpose_hw(const float *src, float *dst, int64_t planes, int64_t H, int64_t W) {
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++)
                dst[(p * W + w) * H + h] = src[(p * H + h) * W + w];
}

// dst[n][c][h][w] += srcT[n][c][w][h]
static void add_transposed(const float *srcT, float *dst, int64_t planes, int64_t H, int64_t W) {
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++)
                dst[(p * H + h) * W + w] += srcT[(p * W + w) * H + h];
}

// For every slice s < B * L: C_s = op(A_s) op(B_s), slices `stride` floats apart.
static void sgemm_slices(char ta, char tb, int64_t B, int64_t L, int64_t M, int64_t N, int64_t K,
                         const float *A, int64_t a_image, int64_t a_slice, int64_t lda,
                         const float *Bm, int64_t b_image, int64_t b_slice, int64_t ldb,
                         float *C, int64_t c_image, int64_t c_slice, int64_t ldc) {
    #pragma omp parallel for
    for (int64_t s = 0; s < B * L; s++) {
        int64_t n = s / L, l = s % L;
        dnnl_sgemm(ta, tb, M, N, K, 1.0f, A + n * a_image + l * a_slice, lda,
                   Bm + n * b_image + l * b_slice, ldb, 0.0f, C + n * c_image + l * c_slice, ldc);
    }
}
"""

FORWARD = r"""
const int64_t B = in0_shape0, Cq = in0_shape1, H = in0_shape2, W = in0_shape3, C = in2_shape1;
const int64_t HW = H * W;
const float *q = in0_p, *k = in1_p, *v = in2_p;
float *y = out0_p, *arow = out1_p, *acol = out2_p;
Scratch qT(B * Cq * HW), kT(B * Cq * HW), vT(B * C * HW), yT(B * C * HW);
transpose_hw(q, qT.data(), B * Cq, H, W);
transpose_hw(k, kT.data(), B * Cq, H, W);
transpose_hw(v, vT.data(), B * C, H, W);

// energies: row e[b,h][w][j] = sum_c q[b,c,h,w] k[b,c,h,j]; column e[b,w][h][i] likewise
sgemm_slices('T', 'N', B, H, W, W, Cq, q, Cq * HW, W, HW, k, Cq * HW, W, HW, arow, H * W * W, W * W, W);
sgemm_slices('T', 'N', B, W, H, H, Cq, qT.data(), Cq * HW, H, HW, kT.data(), Cq * HW, H, HW,
             acol, W * H * H, H * H, H);

// one softmax over the H + W - 1 positions of each pixel
#pragma omp parallel for
for (int64_t p = 0; p < B * HW; p++) {
    int64_t b = p / HW, h = (p / W) % H, w = p % W;
    float *row = arow + ((b * H + h) * W + w) * W;
    float *col = acol + ((b * W + w) * H + h) * H;
    float top = -INFINITY;
    for (int64_t j = 0; j < W; j++) top = fmaxf(top, row[j]);
    for (int64_t i = 0; i < H; i++) if (i != h) top = fmaxf(top, col[i]);
    float sum = 0;
    for (int64_t j = 0; j < W; j++) { row[j] = expf(row[j] - top); sum += row[j]; }
    for (int64_t i = 0; i < H; i++) { col[i] = i == h ? 0.0f : expf(col[i] - top); sum += col[i]; }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < W; j++) row[j] *= inv;
    for (int64_t i = 0; i < H; i++) col[i] *= inv;
}

// aggregation: y[b,:,h,:] = v[b,:,h,:] arow[b,h]^T, and the same per column on [.., W, H]
sgemm_slices('N', 'T', B, H, C, W, W, v, C * HW, W, HW, arow, H * W * W, W * W, W, y, C * HW, W, HW);
sgemm_slices('N', 'T', B, W, C, H, H, vT.data(), C * HW, H, HW, acol, W * H * H, H * H, H,
             yT.data(), C * HW, H, HW);
add_transposed(yT.data(), y, B * C, H, W);
"""

BACKWARD = r"""
const int64_t B = in0_shape0, Cq = in0_shape1, H = in0_shape2, W = in0_shape3, C = in2_shape1;
const int64_t HW = H * W;
const float *q = in0_p, *k = in1_p, *v = in2_p, *arow = in3_p, *acol = in4_p, *g = in5_p;
float *gq = out0_p, *gk = out1_p, *gv = out2_p;
Scratch qT(B * Cq * HW), kT(B * Cq * HW), vT(B * C * HW), gT(B * C * HW);
Scratch d_row(B * H * W * W), d_col(B * W * H * H), tmpT(B * C * HW);
transpose_hw(q, qT.data(), B * Cq, H, W);
transpose_hw(k, kT.data(), B * Cq, H, W);
transpose_hw(v, vT.data(), B * C, H, W);
transpose_hw(g, gT.data(), B * C, H, W);

// d attention: d_row[b,h][w][j] = sum_c g[b,c,h,w] v[b,c,h,j]; columns likewise
sgemm_slices('T', 'N', B, H, W, W, C, g, C * HW, W, HW, v, C * HW, W, HW, d_row.data(), H * W * W, W * W, W);
sgemm_slices('T', 'N', B, W, H, H, C, gT.data(), C * HW, H, HW, vT.data(), C * HW, H, HW,
             d_col.data(), W * H * H, H * H, H);

// d value: gv[b,:,h,:] = g[b,:,h,:] arow[b,h], plus the column term
sgemm_slices('N', 'N', B, H, C, W, W, g, C * HW, W, HW, arow, H * W * W, W * W, W, gv, C * HW, W, HW);
sgemm_slices('N', 'N', B, W, C, H, H, gT.data(), C * HW, H, HW, acol, W * H * H, H * H, H,
             tmpT.data(), C * HW, H, HW);
add_transposed(tmpT.data(), gv, B * C, H, W);

// softmax backward over each pixel's path: d_e = A * (d_A - sum(A * d_A))
#pragma omp parallel for
for (int64_t p = 0; p < B * HW; p++) {
    int64_t b = p / HW, h = (p / W) % H, w = p % W;
    const float *a_row = arow + ((b * H + h) * W + w) * W;
    const float *a_col = acol + ((b * W + w) * H + h) * H;
    float *dr = d_row.data() + ((b * H + h) * W + w) * W;
    float *dc = d_col.data() + ((b * W + w) * H + h) * H;
    float dot = 0;
    for (int64_t j = 0; j < W; j++) dot += a_row[j] * dr[j];
    for (int64_t i = 0; i < H; i++) dot += a_col[i] * dc[i];
    for (int64_t j = 0; j < W; j++) dr[j] = a_row[j] * (dr[j] - dot);
    for (int64_t i = 0; i < H; i++) dc[i] = a_col[i] * (dc[i] - dot);
}

// d query: gq[b,:,h,:] = k[b,:,h,:] d_row[b,h]^T; d key: gk[b,:,h,:] = q[b,:,h,:] d_row[b,h]
float *tmp = tmpT.data();
sgemm_slices('N', 'T', B, H, Cq, W, W, k, Cq * HW, W, HW, d_row.data(), H * W * W, W * W, W, gq, Cq * HW, W, HW);
sgemm_slices('N', 'T', B, W, Cq, H, H, kT.data(), Cq * HW, H, HW, d_col.data(), W * H * H, H * H, H,
             tmp, Cq * HW, H, HW);
add_transposed(tmp, gq, B * Cq, H, W);
sgemm_slices('N', 'N', B, H, Cq, W, W, q, Cq * HW, W, HW, d_row.data(), H * W * W, W * W, W, gk, Cq * HW, W, HW);
sgemm_slices('N', 'N', B, W, Cq, H, H, qT.data(), Cq * HW, H, HW, d_col.data(), W * H * H, H * H, H,
             tmp, Cq * HW, H, HW);
add_transposed(tmp, gk, B * Cq, H, W);
"""

# y = gamma * out + x; in0 = gamma [1], in1 = out, in2 = x
SCALED_RESIDUAL = r"""
const int64_t n = in1->num;
const float gamma = in0_p[0];
#pragma omp parallel for simd
for (int64_t i = 0; i < n; i++) out0_p[i] = gamma * in1_p[i] + in2_p[i];
"""

# d out = gamma * dy and d gamma = sum(out * dy); in0 = gamma, in1 = out, in2 = dy. The sum goes
# in double over fixed blocks, added in order: the same result for any number of threads.
SCALED_RESIDUAL_GRAD = r"""
const int64_t n = in1->num, BLOCK = 1 << 16, blocks = (n + BLOCK - 1) / BLOCK;
const float gamma = in0_p[0];
std::vector<double> partial(blocks);
#pragma omp parallel for
for (int64_t b = 0; b < blocks; b++) {
    const int64_t end = std::min(n, (b + 1) * BLOCK);
    double sum = 0;
    #pragma omp simd reduction(+:sum)
    for (int64_t i = b * BLOCK; i < end; i++) {
        sum += double(in1_p[i]) * in2_p[i];
        out0_p[i] = gamma * in2_p[i];
    }
    partial[b] = sum;
}
double total = 0;
for (int64_t b = 0; b < blocks; b++) total += partial[b];
out1_p[0] = float(total);
"""


def available(*tensors):
    """True where this kernel applies: CPU execution, oneDNN loaded, float32 inputs."""
    return (not jt.flags.use_cuda and jt.mkl_ops is not None
            and all(t.dtype == jt.float32 for t in tensors))


class CrissCrossAttentionCPU(jt.Function):
    def execute(self, query, key, value):
        b, _, h, w = query.shape
        out, att_row, att_col = jt.code(
            [value.shape, (b, h, w, w), (b, w, h, h)], [jt.float32] * 3, [query, key, value],
            cpu_header=HEADER, cpu_src=FORWARD)
        self.saved = (query, key, value, att_row, att_col)
        return out

    def grad(self, grad_out):
        query, key, value, att_row, att_col = self.saved
        return jt.code([query.shape, key.shape, value.shape], [jt.float32] * 3,
                       [query, key, value, att_row, att_col, grad_out],
                       cpu_header=HEADER, cpu_src=BACKWARD)


def criss_cross_attention(query, key, value):
    return CrissCrossAttentionCPU.apply(query, key, value)


class ScaledResidualCPU(jt.Function):
    """gamma * out + x (Eq. 2's last step); backward: d out and d gamma in one pass, d x = dy."""

    def execute(self, gamma, out, x):
        self.saved = (gamma, out)
        return jt.code(x.shape, jt.float32, [gamma, out, x], cpu_header=HEADER, cpu_src=SCALED_RESIDUAL)

    def grad(self, grad_y):
        gamma, out = self.saved
        grad_out, grad_gamma = jt.code([out.shape, gamma.shape], [jt.float32] * 2, [gamma, out, grad_y],
                                       cpu_header=HEADER, cpu_src=SCALED_RESIDUAL_GRAD)
        return grad_gamma, grad_out, grad_y


def scaled_residual(gamma, out, x):
    return ScaledResidualCPU.apply(gamma, out, x)
