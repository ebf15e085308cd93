"""Activated batch normalisation, as the official CCNet code's InPlaceABN(Sync) computes it.

The official model normalises with InPlaceABNSync everywhere: in the backbone with no activation
(a ReLU follows), in the RCCA and DSN heads with its default LeakyReLU(0.01). Two details differ
from a plain BatchNorm and are kept here so that official checkpoints compute what they computed:
the affine scale is |weight| + eps (InPlaceABN needs a positive scale to invert the activation),
and the running variance is updated with the unbiased batch variance. mmsegmentation's CCNet uses
plain (Sync)BatchNorm followed by ReLU: `BatchNorm2d` below, chosen by `make_norm("batchnorm", ...)`.
Parameter names are those of the checkpoints: weight, bias, running_mean, running_var.
"""
import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

import kernels

ACTIVATIONS = ("leaky_relu", "relu", "identity")


class ABN(nn.Module):
    positive_scale = True  # InPlaceABN scales by |weight| + eps

    def __init__(self, num_features, activation="leaky_relu", slope=0.01, eps=1e-5, momentum=0.1):
        if activation not in ACTIVATIONS:
            raise ValueError(f"ABN: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.num_features = num_features
        self.activation = activation
        self.slope = slope
        self.eps = eps
        self.momentum = momentum
        self.is_train = True
        self.weight = jt.ones(num_features)
        self.bias = jt.zeros(num_features)
        self.running_mean = jt.zeros(num_features).stop_grad()
        self.running_var = jt.ones(num_features).stop_grad()

    def _batch_statistics(self, x):
        """Per-channel mean and biased variance over N, H, W (across processes under MPI)."""
        mean = x.mean(dims=(0, 2, 3))
        if jt.in_mpi:
            mean = mean.mpi_all_reduce("mean")
        var = (x - mean.reshape(1, -1, 1, 1)).sqr().mean(dims=(0, 2, 3))
        if jt.in_mpi:
            var = var.mpi_all_reduce("mean")
        return mean, var

    def _update_running_statistics(self, x, mean, var):
        """Running statistics move towards the batch's, with the unbiased variance."""
        count = x.numel() // x.shape[1] * jt.world_size
        unbiased = var * (count / max(count - 1, 1))
        self.running_mean.update(self.running_mean + (mean.detach() - self.running_mean) * self.momentum)
        self.running_var.update(self.running_var + (unbiased.detach() - self.running_var) * self.momentum)

    def _scale(self, weight):
        """The affine scale: |weight| + eps for InPlaceABN, the weight itself for BatchNorm."""
        return weight.abs() + self.eps if self.positive_scale else weight

    def execute(self, x, residual=None):
        """act(norm(x) [+ residual]): a residual, where given, joins before the activation."""
        kernel = kernels.choose("norm", x) if self.is_train else None
        if kernel:
            stats = kernel.batch_statistics(x)
            self._update_running_statistics(x, stats[0], stats[1])
            return kernel.norm_activation(x, self._scale(self.weight), self.bias, stats, self.activation,
                                           self.slope, self.eps, residual)
        if self.is_train:
            mean, var = self._batch_statistics(x)
            self._update_running_statistics(x, mean, var)
        else:
            mean, var = self.running_mean, self.running_var
        # the per-channel arrays are broadcast to x's shape before any arithmetic, so that Jittor
        # computes the whole norm in x's one pass: a per-channel scale and shift would be an
        # operator of their own (on a GPU one more launch and its host time per norm)
        weight, bias, mean, var = (v.broadcast(x, [0, 2, 3]) for v in (self.weight, self.bias, mean, var))
        y = (x - mean) * (self._scale(weight) / jt.sqrt(var + self.eps)) + bias
        if residual is not None:
            y = y + residual
        if self.activation == "leaky_relu":
            return nn.leaky_relu(y, self.slope)
        if self.activation == "relu":
            return nn.relu(y)
        return y


class BatchNorm2d(ABN):
    """PyTorch's BatchNorm2d (the weight used as it is), then `activation` (none by default)."""
    positive_scale = False

    def __init__(self, num_features, activation="identity", eps=1e-5, momentum=0.1):
        super().__init__(num_features, activation, eps=eps, momentum=momentum)


NORMS = {"inplace_abn": ABN, "batchnorm": BatchNorm2d}


def make_norm(kind, num_features, activation):
    """A norm of `kind` ("inplace_abn": the official code's, "batchnorm": mmsegmentation's)."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
    return NORMS[kind](num_features, activation)
