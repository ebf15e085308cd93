"""Per-pixel cross-entropy of NCHW logits as one CPU kernel on both cores, forward and backward.

Jittor's `nn.cross_entropy_loss` transposes the logits to [N H W, C] and builds the log-softmax
from half a dozen single-core kernels; at the label resolution of a train step (150 classes at
the full crop) that cost more than twice PyTorch's loss. Here each thread takes blocks of pixels
of one image and walks the classes with the pixels innermost (contiguous in NCHW):

    forward   nll = log(sum_c exp(x_c - max)) + max - x_label, 0 where the label is not a class
    backward  dx_c = (softmax_c - [c == label]) * dnll, 0 where the label is not a class

Sums of exponentials are in double. Used on the CPU for float32 and float64 logits; elsewhere
(GPUs) losses.pixel_cross_entropy computes the same with Jittor operators, also in place.
"""
import jittor_env  # noqa: F401
import jittor as jt

HEADER = r"""
#include <omp.h>
#include <cmath>
#include <algorithm>
static const int64_t BLOCK = 256;  // pixels per task: a few KiB per class row

// Per pixel of x[n, :, p0:p1] (C classes, HW pixels a map): the maximum logit and the sum of
// exp(x - maximum) over the classes.
template <class T>
static void softmax_terms(const T *x, int64_t C, int64_t HW, int64_t p0, int64_t p1, T *peak, double *total) {
    const int64_t len = p1 - p0;
    for (int64_t i = 0; i < len; i++) { peak[i] = x[p0 + i]; total[i] = 0; }
    for (int64_t c = 1; c < C; c++) {
        const T *row = x + c * HW + p0;
        for (int64_t i = 0; i < len; i++) peak[i] = std::max(peak[i], row[i]);
    }
    for (int64_t c = 0; c < C; c++) {
        const T *row = x + c * HW + p0;
        for (int64_t i = 0; i < len; i++) total[i] += std::exp(double(row[i] - peak[i]));
    }
}

// body(n, p0, p1) for every block [p0, p1) of BLOCK pixels of every image n, on all cores.
template <class Body>
static void for_pixel_blocks(int64_t N, int64_t HW, Body body) {
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    #pragma omp parallel for
    for (int64_t task = 0; task < N * blocks; task++) {
        const int64_t p0 = task % blocks * BLOCK;
        body(task / blocks, p0, std::min(p0 + BLOCK, HW));
    }
}
"""

# in0 = logits [N, C, H, W], in1 = labels [N, H, W]; out0 = nll [N, H, W]
FORWARD = r"""
typedef in0_type T;
const int64_t C = in0_shape1, HW = in0_shape2 * in0_shape3;
for_pixel_blocks(in0_shape0, HW, [&](int64_t n, int64_t p0, int64_t p1) {
    const T *x = in0_p + n * C * HW;
    T peak[BLOCK];
    double total[BLOCK];
    softmax_terms<T>(x, C, HW, p0, p1, peak, total);
    for (int64_t p = p0; p < p1; p++) {
        const int64_t label = int64_t(in1_p[n * HW + p]);
        out0_p[n * HW + p] = label >= 0 && label < C
            ? T(std::log(total[p - p0]) + double(peak[p - p0]) - double(x[label * HW + p])) : T(0);
    }
});
"""

# The gradient of the logits; dout = the gradient at nll; out0 = dx
LOGITS_GRAD = r"""
typedef in0_type T;
const int64_t C = in0_shape1, HW = in0_shape2 * in0_shape3;
for_pixel_blocks(in0_shape0, HW, [&](int64_t n, int64_t p0, int64_t p1) {
    const int64_t len = p1 - p0;
    const T *x = in0_p + n * C * HW, *g = dout_p + n * HW + p0;
    T *dx = out0_p + n * C * HW;
    T peak[BLOCK];
    double total[BLOCK], scale[BLOCK];
    int64_t label[BLOCK];
    softmax_terms<T>(x, C, HW, p0, p1, peak, total);
    for (int64_t i = 0; i < len; i++) {
        label[i] = int64_t(in1_p[n * HW + p0 + i]);
        scale[i] = label[i] >= 0 && label[i] < C ? double(g[i]) / total[i] : 0.0;
    }
    for (int64_t c = 0; c < C; c++) {
        const T *row = x + c * HW + p0;
        T *out = dx + c * HW + p0;
        for (int64_t i = 0; i < len; i++)
            out[i] = T(std::exp(double(row[i] - peak[i])) * scale[i] - (label[i] == c ? double(g[i]) : 0.0));
    }
});
"""


def available(logits):
    """True where the kernel applies: CPU execution and float32 or float64 logits [N, C, H, W]."""
    return not jt.flags.use_cuda and logits.ndim == 4 and logits.dtype in (jt.float32, jt.float64)


def pixel_cross_entropy(logits, labels):
    """nll [N, H, W] of logits [N, C, H, W] against integer labels [N, H, W]; 0 where a label is
    not one of the C classes (the ignore index among them)."""
    return jt.code(labels.shape, logits.dtype, [logits, labels.detach()], cpu_header=HEADER,
                   cpu_src=FORWARD, cpu_grad_src=[LOGITS_GRAD])
