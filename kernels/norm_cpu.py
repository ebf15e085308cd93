"""Batch normalisation with its activation as CPU kernels on both cores, for training: the same
function as the plain formulation in models.norm, in a few passes over the map instead of the
dozen single-core kernels Jittor's autograd makes of it per layer.

    stats      x -> per-channel mean and biased variance, stacked [2, C] (sums in double)
    y          act(x * scale + shift [+ r]), scale = weight / sqrt(var + eps), shift = bias - mean * scale
    sums       per-channel sums of dz and dz * xhat, in double: one pass over x and dy
    dx         scale * (dz - mean(dz) - xhat * mean(dz * xhat)), the gradient through the batch
               statistics as well (and d r = dz): one more pass
    d affine   the sums: d weight = sum(dz * xhat), d bias = sum(dz)

(dz is the gradient at the activation's input, xhat = (x - mean) / sqrt(var + eps).) A residual r,
where given, joins before the activation: a ResNet bottleneck's last norm, shortcut add and ReLU
are one pass forward and the ReLU's mask costs no pass of its own backward. The statistics enter
`y` as a constant and the backward accounts for them.

Used in training on one CPU process for float32 and float64 maps; on GPUs and under MPI
kernels/norm_gpu.py computes the same with Jittor operators (and the statistics of every process's
part of the batch). In eval models.norm keeps the plain formulation, which Jittor fuses with the
residual add and ReLU around it.
"""
import jittor_env  # noqa: F401
import jittor as jt


def negative_slope(activation, slope):
    """Each activation is z where z > 0, else this slope times z."""
    return {"identity": 1.0, "relu": 0.0, "leaky_relu": float(slope)}[activation]


HEADER = r"""
#include <omp.h>
#include <cmath>
#include <vector>
// The activation of z and its gradient given g at its output; `slope` (1 for the identity, 0 for
// ReLU) comes with the kernel's data, so that every activation shares one compiled kernel.
#define ACTIVATE(z) ((z) > 0 ? (z) : (z) * slope)
#define DERIVATIVE(z, g) ((z) > 0 ? (g) : (g) * slope)
#define HYPER_PARAMETERS const T slope = T(data["slope"]), eps = T(data["eps"])
// z, the activation's input, at pixel i of plane x (residual plane r: not read without one)
#define PRE(x, r, i) ((x)[i] * ch.scale + ch.shift@RESIDUAL)
// dr, the residual's gradient, is dz (written only where a residual joins)
#define DR_P @DR_P
#define WRITE_DR(i, dz) @WRITE_DR

// Per-channel scale and shift of x, from affine = [weight; bias] and stats = [mean; var].
template <class T> struct Channel {
    T scale, shift, mean, invstd;
    Channel(const T *affine, const T *stats, int64_t C, int64_t c, T eps) {
        const T std = std::sqrt(stats[C + c] + eps);
        scale = affine[c] / std;
        shift = affine[C + c] - stats[c] * scale;
        mean = stats[c];
        invstd = T(1) / std;
    }
};

// sums[c] = sum of dz and sums[C + c] = sum of dz * xhat over images and pixels of channel c.
template <class T>
static void channel_sums(const T *x, const T *r, const T *dy, const T *affine, const T *stats,
                         int64_t N, int64_t C, int64_t HW, T slope, T eps, double *sums) {
    #pragma omp parallel for
    for (int64_t c = 0; c < C; c++) {
        const Channel<T> ch(affine, stats, C, c, eps);
        double sum_dz = 0, sum_dz_centred = 0;
        for (int64_t n = 0; n < N; n++) {
            const T *xp = x + (n * C + c) * HW, *rp = r + (n * C + c) * HW, *gp = dy + (n * C + c) * HW;
            #pragma omp simd reduction(+:sum_dz, sum_dz_centred)
            for (int64_t i = 0; i < HW; i++) {
                const T z = PRE(xp, rp, i);
                const T dz = DERIVATIVE(z, gp[i]);
                sum_dz += dz;
                sum_dz_centred += dz * (xp[i] - ch.mean);
            }
        }
        sums[c] = sum_dz;
        sums[C + c] = sum_dz_centred * ch.invstd;
    }
}
"""

# in0 = x [N, C, H, W]; out0 = [mean; biased variance] [2, C]
STATS = r"""
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
const double count = double(N * HW);
#pragma omp parallel for
for (int64_t c = 0; c < C; c++) {
    double sum = 0;
    for (int64_t n = 0; n < N; n++) {
        const T *x = in0_p + (n * C + c) * HW;
        #pragma omp simd reduction(+:sum)
        for (int64_t i = 0; i < HW; i++) sum += x[i];
    }
    const double mean = sum / count;
    double squares = 0;
    for (int64_t n = 0; n < N; n++) {
        const T *x = in0_p + (n * C + c) * HW;
        #pragma omp simd reduction(+:squares)
        for (int64_t i = 0; i < HW; i++) squares += (x[i] - mean) * (x[i] - mean);
    }
    out0_p[c] = T(mean);
    out0_p[C + c] = T(squares / count);
}
"""

# in0 = x, in1 = affine [2, C], in2 = stats [2, C], in3 = r where a residual joins (otherwise x
# again, never read); out0 = y
FORWARD = r"""
typedef in0_type T;
HYPER_PARAMETERS;
const int64_t C = in0_shape1, HW = in0_shape2 * in0_shape3, planes = in0_shape0 * C;
#pragma omp parallel for
for (int64_t p = 0; p < planes; p++) {
    const Channel<T> ch(in1_p, in2_p, C, p % C, eps);
    const T *x = in0_p + p * HW, *r = in3_p + p * HW;
    T *y = out0_p + p * HW;
    #pragma omp simd
    for (int64_t i = 0; i < HW; i++) {
        const T z = PRE(x, r, i);
        y[i] = ACTIVATE(z);
    }
}
"""

# The per-channel sums of the gradient; inputs as FORWARD's, in4 = dy, the gradient at y;
# out0 = [sum(dz); sum(dz * xhat)] [2, C] in double
SUMS = r"""
typedef in0_type T;
HYPER_PARAMETERS;
channel_sums<T>(in0_p, in3_p, in4_p, in1_p, in2_p, in0_shape0, in0_shape1, in0_shape2 * in0_shape3,
                slope, eps, out0_p);
"""

# The gradients of x (and r); inputs as SUMS', in5 = its sums; out0 = dx (out1 = dr = dz)
INPUT_GRAD = r"""
typedef in0_type T;
HYPER_PARAMETERS;
const int64_t N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
const double count = double(N * HW), *sums = in5_p;
#pragma omp parallel for
for (int64_t p = 0; p < N * C; p++) {
    const int64_t c = p % C;
    const Channel<T> ch(in1_p, in2_p, C, c, eps);
    // dx = dz * scale + x * b + d: scale * (dz - mean(dz) - xhat * mean(dz * xhat)) expanded
    const T b = T(-double(ch.scale) * double(ch.invstd) * sums[C + c] / count);
    const T d = T(-double(ch.scale) * sums[c] / count - double(b) * double(ch.mean));
    const T *x = in0_p + p * HW, *r = in3_p + p * HW, *dy = in4_p + p * HW;
    T *dx = out0_p + p * HW, *dr = DR_P + p * HW;
    #pragma omp simd
    for (int64_t i = 0; i < HW; i++) {
        const T dz = DERIVATIVE(PRE(x, r, i), dy[i]);
        dx[i] = dz * ch.scale + x[i] * b + d;
        WRITE_DR(i, dz);
    }
}
"""

# The header with and without a residual joining (made once, not per call)
HEADERS = {joins: HEADER.replace("@RESIDUAL", " + (r)[i]" if joins else "")
           .replace("@DR_P", "out1_p" if joins else "out0_p")
           .replace("@WRITE_DR", "dr[i] = (dz)" if joins else "(void)0")
           for joins in (False, True)}


def available(x):
    """True where these kernels apply: one CPU process and a float32 or float64 map [N, C, H, W]."""
    return not jt.flags.use_cuda and not jt.in_mpi and x.ndim == 4 and x.dtype in (jt.float32, jt.float64)


def batch_statistics(x):
    """[mean; biased variance] [2, C] of x [N, C, H, W] over N, H, W, as a constant."""
    return jt.code((2, x.shape[1]), x.dtype, [x.detach()], cpu_src=STATS)


class NormActivation(jt.Function):
    """y = act(x * scale + shift [+ residual]); backward: the sums, then dx (and dr) in one pass."""

    def execute(self, x, affine, stats, residual, data):
        self.saved = [x, affine, stats, residual]
        self.header, self.data = HEADERS[bool(data["residual"])], data
        return jt.code(x.shape, x.dtype, self.saved, cpu_header=self.header, cpu_src=FORWARD, data=data)

    def grad(self, dy):
        x = self.saved[0]
        inputs = self.saved + [dy]
        sums = jt.code((2, x.shape[1]), jt.float64, inputs, cpu_header=self.header, cpu_src=SUMS, data=self.data)
        outputs = 2 if self.data["residual"] else 1
        grads = jt.code([x.shape] * outputs, [x.dtype] * outputs, inputs + [sums], cpu_header=self.header,
                        cpu_src=INPUT_GRAD, data=self.data)
        daffine = jt.stack([sums[1], sums[0]]).cast(x.dtype)  # [d weight; d bias]
        return grads[0], daffine, None, grads[1] if outputs == 2 else None, None


def norm_activation(x, weight, bias, stats, activation, slope, eps, residual=None):
    """act((x - mean) / sqrt(var + eps) * weight + bias [+ residual]) per channel, [mean; var] =
    stats, x's own batch statistics: the gradient of x includes their dependence on x."""
    residual, data = activation_data(x, activation, slope, eps, residual)
    affine = jt.stack([weight, bias]).cast(x.dtype)
    return NormActivation.apply(x, affine, stats.detach(), residual, data)


def activation_data(x, activation, slope, eps, residual):
    """The residual argument of this module's NormActivation and of kernels.norm_gpu's (x, never
    read, where none joins) and the data both take."""
    joins = residual is not None
    data = {"slope": negative_slope(activation, slope), "eps": float(eps), "residual": int(joins)}
    return (residual.cast(x.dtype) if joins else x.detach()), data
