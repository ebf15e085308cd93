"""Depthwise convolution (groups = channels, stride 1) as CPU kernels on both cores: the same
function as nn.Conv2d, in the caller's [N, C, H, W] layout.

oneDNN 2.2, as Jittor calls it, computes the weight gradient of every depthwise convolution and
the whole dilated one with its GEMM fallback (im2col per channel), 10-20x slower per call than
its depthwise kernels, which also need the input reordered to a blocked layout and back. A
depthwise convolution is one small correlation per image plane:

    y[n, c]   = bias[c] + sum_{i, j} w[c, i, j] x[n, c, . + i d - p, . + j d - p]
    dx[n, c]  = the same correlation of dy with the kernel flipped, padding d (k - 1) - p
    dw[c,i,j] = sum over n and pixels of dy[n, c] x[n, c, . + i d - p, . + j d - p]
    dbias[c]  = sum over n and pixels of dy[n, c]

Planes (forward, input gradient) or channels (weight and bias gradients) are spread over the
OpenMP threads; the innermost loop runs along a row, contiguous in both operands. Sums over
pixels are in double.
"""
import jittor_env  # noqa: F401
import jittor as jt

HEADER = r"""
#include <omp.h>
#include <cstring>
#include <vector>
#define PADDING int64_t(data["padding"])
#define DILATION int64_t(data["dilation"])

// Sizes of one plane's correlation: input H x W zero-padded by P to Hp x Wp, K x K kernel with
// dilation d, output Ho x Wo. Rows are computed at the padded width Wp, so that each kernel tap
// is one saxpy (or dot product) over Ho * Wp contiguous values; columns >= Wo are dropped.
struct Plane {
    int64_t H, W, P, K, d, Hp, Wp, Ho, Wo, span, tail;
    Plane(int64_t H, int64_t W, int64_t P, int64_t K, int64_t d)
        : H(H), W(W), P(P), K(K), d(d), Hp(H + 2 * P), Wp(W + 2 * P), Ho(Hp - (K - 1) * d),
          Wo(Wp - (K - 1) * d), span(Ho * Wp), tail((K - 1) * d) {}
    int64_t padded() const { return Hp * Wp + tail; }  // the last tap reads `tail` values past
    int64_t offset(int64_t i, int64_t j) const { return i * d * Wp + j * d; }
};

// xp = x zero-padded by P (and `tail` zeros after it).
template <class T>
static void pad_plane(const T *x, const Plane &g, T *xp) {
    std::memset(xp, 0, sizeof(T) * g.padded());
    for (int64_t y = 0; y < g.H; y++)
        std::memcpy(xp + (y + g.P) * g.Wp + g.P, x + y * g.W, sizeof(T) * g.W);
}

// y[oy, ox] = init + sum_{i, j} w[i, j] x[oy + i d - P, ox + j d - P], x zero outside H x W,
// the kernel read flipped (w[K - 1 - i, K - 1 - j]) where `flip`. work: padded() + span values.
template <class T>
static void correlate_plane(const T *x, const Plane &g, const T *w, bool flip, T init, T *y,
                            T *work) {
    T *xp = work, *acc = work + g.padded();
    pad_plane(x, g, xp);
    for (int64_t t = 0; t < g.span; t++) acc[t] = init;
    for (int64_t i = 0; i < g.K; i++)
        for (int64_t j = 0; j < g.K; j++) {
            const T wv = flip ? w[(g.K - 1 - i) * g.K + (g.K - 1 - j)] : w[i * g.K + j];
            const T *src = xp + g.offset(i, j);
            #pragma omp simd
            for (int64_t t = 0; t < g.span; t++) acc[t] += wv * src[t];
        }
    for (int64_t oy = 0; oy < g.Ho; oy++)
        std::memcpy(y + oy * g.Wo, acc + oy * g.Wp, sizeof(T) * g.Wo);
}

// The correlation of every plane (n, c) of `x` [N, C, H, W] with channel c's kernel.
template <class T>
static void correlate(const T *x, int64_t planes, int64_t C, const Plane &g, const T *w,
                      const T *bias, bool flip, T *y) {
    #pragma omp parallel
    {
        std::vector<T> work(g.padded() + g.span);
        #pragma omp for
        for (int64_t p = 0; p < planes; p++) {
            const int64_t c = p % C;
            correlate_plane<T>(x + p * g.H * g.W, g, w + c * g.K * g.K, flip,
                               bias ? bias[c] : T(0), y + p * g.Ho * g.Wo, work.data());
        }
    }
}
"""

# in0 = x [N, C, H, W], in1 = weight [C, 1, K, K], in2 = bias [C]; out0 = y [N, C, Ho, Wo]
FORWARD = r"""
const Plane g(in0_shape2, in0_shape3, PADDING, in1_shape2, DILATION);
correlate<in0_type>(in0_p, in0_shape0 * in0_shape1, in0_shape1, g, in1_p, in2_p, false, out0_p);
"""

# The gradient of x: dy correlated with the flipped kernel, padded by d (K - 1) - P
INPUT_GRAD = r"""
const int64_t K = in1_shape2;
const Plane g(dout_shape2, dout_shape3, DILATION * (K - 1) - PADDING, K, DILATION);
correlate<in0_type>(dout_p, in0_shape0 * in0_shape1, in0_shape1, g, in1_p, nullptr, true, out0_p);
"""

# The gradient of the weight: per tap, the dot product of dy (at the padded width, zeros in the
# dropped columns) with the padded input shifted by the tap; out0 = dw [C, 1, K, K]
WEIGHT_GRAD = r"""
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, K = in1_shape2;
const Plane g(in0_shape2, in0_shape3, PADDING, K, DILATION);
#pragma omp parallel
{
    std::vector<T> xp(g.padded()), dyp(g.span, T(0));
    std::vector<double> sums(K * K);
    #pragma omp for
    for (int64_t c = 0; c < C; c++) {
        std::fill(sums.begin(), sums.end(), 0.0);
        for (int64_t n = 0; n < N; n++) {
            pad_plane(in0_p + (n * C + c) * g.H * g.W, g, xp.data());
            for (int64_t oy = 0; oy < g.Ho; oy++)
                std::memcpy(&dyp[oy * g.Wp], dout_p + ((n * C + c) * g.Ho + oy) * g.Wo, sizeof(T) * g.Wo);
            for (int64_t i = 0; i < K; i++)
                for (int64_t j = 0; j < K; j++) {
                    const T *src = xp.data() + g.offset(i, j);
                    T dot = 0;
                    #pragma omp simd reduction(+:dot)
                    for (int64_t t = 0; t < g.span; t++) dot += dyp[t] * src[t];
                    sums[i * K + j] += dot;
                }
        }
        for (int64_t k = 0; k < K * K; k++) out0_p[c * K * K + k] = T(sums[k]);
    }
}
"""

# The gradient of the bias; out0 = dbias [C]
BIAS_GRAD = r"""
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, HWo = dout_shape2 * dout_shape3;
#pragma omp parallel for
for (int64_t c = 0; c < C; c++) {
    double sum = 0;
    for (int64_t n = 0; n < N; n++) {
        const T *dy = dout_p + (n * C + c) * HWo;
        T plane = 0;
        #pragma omp simd reduction(+:plane)
        for (int64_t i = 0; i < HWo; i++) plane += dy[i];
        sum += plane;
    }
    out0_p[c] = T(sum);
}
"""


def available(x, conv):
    """True where these kernels apply: CPU execution, a float32 or float64 map [N, C, H, W], and
    `conv` (an nn.Conv2d) depthwise with stride 1, a square kernel and padding at most the
    kernel's dilated extent minus one (the input gradient's padding is that difference)."""
    weight = conv.weight
    return (not jt.flags.use_cuda and x.ndim == 4 and x.dtype in (jt.float32, jt.float64)
            and conv.groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1
            and weight.shape[2] == weight.shape[3] and tuple(conv.stride) == (1, 1)
            and len(set(conv.padding)) == 1 and len(set(conv.dilation)) == 1
            and conv.padding[0] <= conv.dilation[0] * (weight.shape[2] - 1))


def depthwise_conv2d(x, weight, bias, padding, dilation):
    """y = x convolved per channel with weight [C, 1, K, K] plus bias [C] (None: no bias), stride
    1, the same padding and dilation along both axes."""
    n, c, h, w = x.shape
    k = weight.shape[2]
    if not 0 <= padding <= dilation * (k - 1):
        raise ValueError(f"depthwise_conv2d: padding must be in [0, dilation * (kernel - 1)] = "
                         f"[0, {dilation * (k - 1)}], got {padding}")
    out_shape = (n, c, h + 2 * padding - dilation * (k - 1), w + 2 * padding - dilation * (k - 1))
    if bias is None:
        bias = jt.zeros(c, dtype=x.dtype).stop_grad()
    return jt.code(out_shape, x.dtype, [x, weight.cast(x.dtype), bias.cast(x.dtype)],
                   cpu_header=HEADER, cpu_src=FORWARD, cpu_grad_src=[INPUT_GRAD, WEIGHT_GRAD, BIAS_GRAD],
                   data={"padding": padding, "dilation": dilation})
