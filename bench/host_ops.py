"""What a GPU step asks of the host, measured on the CPU: operators Jittor runs per training step
and per evaluation, and the time Python takes to build the step's graph, with the formulations a
GPU uses (the CPU kernels switched off: attention by batched products, the GPU norm, VAN's
depthwise convolutions and the cross-entropy as Jittor operators).

    python bench/host_ops.py                                  (CCNet-R101 and CCNet-VAN-base)
    python bench/host_ops.py --backbones van_base --shape 2 3 64 64 --steps 9

On a GPU each operator costs host time in Jittor's executor, and Python builds the whole graph
before any of it runs, so both numbers bound how fast a host-bound GPU step can be. The train step
is train.py's (forward, main + 0.4 x DSN loss, backward, the recipe's optimizer); build times are
medians over --steps steps after two warm-up steps.
"""
import argparse
import statistics
import time

import numpy as np


import jittor_env  # noqa: F401
import jittor as jt

import train
from kernels import cca_cpu, cross_entropy_cpu, depthwise_cpu, norm_cpu, norm_gpu
from models import build_ccnet


def use_gpu_formulations():
    """Switch the CPU kernels off and the GPU's norm on, as on a GPU."""
    for module in (cca_cpu, depthwise_cpu, cross_entropy_cpu, norm_cpu):
        module.available = lambda *args: False
    norm_gpu.available = lambda x: x.ndim == 4 and x.dtype in (jt.float32, jt.float64)


def operators(run):
    """run()'s result and the number of operator runs Jittor's profiler counts meanwhile."""
    with jt.profile_scope() as report:
        result = run()
    count = report[0].index("Count")
    return result, sum(int(row[count]) for row in report[1:])


def measure(backbone, shape, steps):
    model = build_ccnet(backbone, num_classes=150)
    config = {"optimizer": "sgd" if backbone == "resnet101" else "adamw", "lr": 1e-4, "weight_decay": 1e-4,
              "aux_weight": 0.4}
    optimizer = train.make_optimizer(model, config)
    rng = np.random.default_rng(0)
    images = rng.random(shape, dtype=np.float32)
    labels = rng.integers(0, 150, (shape[0],) + tuple(shape[2:])).astype(np.int32)
    model.train()

    def build():
        loss = train.training_loss(model(jt.array(images)), jt.array(labels), config, None)
        optimizer.step(loss)
        return loss

    builds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        build()
        built = time.perf_counter() - start
        if step >= 2:
            builds.append(built)
        jt.sync_all(True)
    _, train_ops = operators(lambda: (build(), jt.sync_all(True)))
    model.eval()
    with jt.no_grad():
        x = jt.array(images[:1])
        model(x).sync()
        _, eval_ops = operators(lambda: model(x).sync())
    return train_ops, statistics.median(builds), eval_ops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet101", "van_base"])
    p.add_argument("--shape", type=int, nargs=4, default=[2, 3, 64, 64], metavar=("N", "C", "H", "W"))
    p.add_argument("--steps", type=int, default=7)
    args = p.parse_args(argv)
    use_gpu_formulations()
    print("| model | operators per train step | graph building per step | operators per eval (1 image) |\n"
          "|---|---|---|---|")
    for backbone in args.backbones:
        train_ops, build, eval_ops = measure(backbone, tuple(args.shape), args.steps)
        print(f"| CCNet {backbone}, {'x'.join(map(str, args.shape))} | {train_ops:,} | {1000 * build:.1f} ms | "
              f"{eval_ops:,} |", flush=True)


if __name__ == "__main__":
    main()
