"""Batch normalisation with its activation as CPU kernels on both cores: the same function as the
plain formulation in models.norm, in four passes over the map instead of Jittor's dozen.

Jittor's fused element-wise kernels run on one core and its autograd of a batch norm makes about
ten of them per layer; here every pass is one OpenMP loop over channels or (image, channel) planes:

    moments    x -> per-channel mean and biased variance (sums in double)
    apply      y = act(x * scale + shift), scale and shift per channel
    reduce     per-channel sums of dz and dz * xhat, dz the gradient at the activation's input
    input grad dx = dz * A + x * B + D, per-channel A, B, D

The small per-channel arithmetic between the passes (scale, shift, the all-reduce across MPI
processes, the coefficients of dx) stays in Jittor. Used in training on the CPU, for float32 and
float64 maps. With running statistics (eval) models.norm keeps the plain formulation, which Jittor
fuses with the residual add and ReLU around it (faster forward-only: CCNet-R101 eval at 512 x 512
took 3.19 s with these kernels, 2.99 s without), as it does on a GPU.
"""
import jittor_env  # noqa: F401
import jittor as jt

# The activation applied to z and the factor its derivative puts on the gradient at z.
ACTIVATIONS = {
    "identity": ("z", "g"),
    "relu": ("z > 0 ? z : T(0)", "z > 0 ? g : T(0)"),
    "leaky_relu": ("z > 0 ? z : z * T({slope!r})", "z > 0 ? g : g * T({slope!r})"),
}

HEADER = "#include <omp.h>\n#include <cmath>\n"

MOMENTS = r"""
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
    out1_p[c] = T(squares / count);
}
"""

APPLY = r"""
typedef in0_type T;
const int64_t C = in0_shape1, HW = in0_shape2 * in0_shape3, planes = in0_shape0 * C;
#pragma omp parallel for
for (int64_t p = 0; p < planes; p++) {
    const T a = in1_p[p % C], b = in2_p[p % C];
    const T *x = in0_p + p * HW;
    T *y = out0_p + p * HW;
    #pragma omp simd
    for (int64_t i = 0; i < HW; i++) {
        const T z = x[i] * a + b;
        y[i] = @ACTIVATION;
    }
}
"""

# inputs x, dy, scale, shift, mean, invstd; outputs sum(dz), sum(dz * (x - mean) * invstd)
REDUCE = r"""
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
#pragma omp parallel for
for (int64_t c = 0; c < C; c++) {
    const T a = in2_p[c], b = in3_p[c], mean = in4_p[c];
    double sum_dz = 0, sum_dz_xhat = 0;
    for (int64_t n = 0; n < N; n++) {
        const T *x = in0_p + (n * C + c) * HW, *dy = in1_p + (n * C + c) * HW;
        #pragma omp simd reduction(+:sum_dz, sum_dz_xhat)
        for (int64_t i = 0; i < HW; i++) {
            const T z = x[i] * a + b, g = dy[i];
            const T dz = @DERIVATIVE;
            sum_dz += dz;
            sum_dz_xhat += dz * (x[i] - mean);
        }
    }
    out0_p[c] = T(sum_dz);
    out1_p[c] = T(sum_dz_xhat * in5_p[c]);
}
"""

# inputs x, dy, scale, shift, A, B, D; output dx = dz * A + x * B + D
INPUT_GRAD = r"""
typedef in0_type T;
const int64_t C = in0_shape1, HW = in0_shape2 * in0_shape3, planes = in0_shape0 * C;
#pragma omp parallel for
for (int64_t p = 0; p < planes; p++) {
    const int64_t c = p % C;
    const T a = in2_p[c], b = in3_p[c], A = in4_p[c], B = in5_p[c], D = in6_p[c];
    const T *x = in0_p + p * HW, *dy = in1_p + p * HW;
    T *dx = out0_p + p * HW;
    #pragma omp simd
    for (int64_t i = 0; i < HW; i++) {
        const T z = x[i] * a + b, g = dy[i];
        const T dz = @DERIVATIVE;
        dx[i] = dz * A + x[i] * B + D;
    }
}
"""


def available(x):
    """True where these kernels apply: CPU execution and a float32 or float64 map [N, C, H, W]."""
    return not jt.flags.use_cuda and x.ndim == 4 and x.dtype in (jt.float32, jt.float64)


def kernel(source, activation, slope):
    value, derivative = (s.format(slope=float(slope)) for s in ACTIVATIONS[activation])
    return source.replace("@ACTIVATION", value).replace("@DERIVATIVE", derivative)


def moments(x):
    """Per-channel mean and biased variance of x [N, C, H, W] over N, H, W (no gradient)."""
    channels = (x.shape[1],)
    return jt.code([channels, channels], [x.dtype] * 2, [x.detach()], cpu_header=HEADER, cpu_src=MOMENTS)


def all_reduce(value, op):
    return value.mpi_all_reduce(op) if jt.in_mpi else value


class NormActivation(jt.Function):
    """act((x - mean) / sqrt(var + eps) * weight + bias) per channel, mean and var x's own batch
    statistics (across processes under MPI): the gradient flows through them too."""

    def __init__(self, activation, slope, eps):
        self.activation, self.slope, self.eps = activation, slope, eps

    def execute(self, x, weight, bias, mean, var):
        std = jt.sqrt(var + self.eps)
        scale = weight / std  # as models.norm computes them
        shift = bias - mean * scale
        y = jt.code(x.shape, x.dtype, [x, scale, shift], cpu_header=HEADER,
                    cpu_src=kernel(APPLY, self.activation, self.slope))
        self.saved = (x, weight, mean, 1 / std, scale, shift)
        return y

    def grad(self, dy):
        x, weight, mean, invstd, scale, shift = self.saved
        channels = (x.shape[1],)
        sum_dz, sum_dz_xhat = jt.code(
            [channels, channels], [x.dtype] * 2, [x, dy, scale, shift, mean, invstd],
            cpu_header=HEADER, cpu_src=kernel(REDUCE, self.activation, self.slope))
        # dx = scale * (dz - mean(dz) - xhat * mean(dz * xhat)), means over every process's pixels
        count = x.numel() // x.shape[1] * jt.world_size
        mean_dz = all_reduce(sum_dz, "add") / count
        mean_dz_xhat = all_reduce(sum_dz_xhat, "add") / count
        b = -scale * invstd * mean_dz_xhat
        d = -scale * mean_dz - b * mean
        dx = jt.code(x.shape, x.dtype, [x, dy, scale, shift, scale, b, d], cpu_header=HEADER,
                     cpu_src=kernel(INPUT_GRAD, self.activation, self.slope))
        return dx, sum_dz_xhat.cast(weight.dtype), sum_dz.cast(weight.dtype), None, None
