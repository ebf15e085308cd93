"""Speed and memory on this machine: the project (Jittor) against the same thing in PyTorch.

    python bench/speed.py                  # every table
    python bench/speed.py --only cca --repeats 3

Tables: (a) criss-cross attention, the operator (the fused CPU kernel and the batched-matmul
reference) and the module, forward and forward+backward, with achieved GFLOP/s against the
machine's measured GEMM peak; (b) CCNet-R101 and CCNet-VAN-base train steps (forward, loss,
backward, SGD step) and whole-image eval. The PyTorch side (reference/torch_cca.py,
reference/torch_models.py) runs when torch is importable (`pip install torch==2.13.0`).

Each measurement runs in a fresh process, so its peak memory is its own: the rise of the peak
resident set (VmHWM) over what the process held once model and inputs existed (Jittor's
parameters and inputs are computed before that baseline, as PyTorch's exist when made). Times are medians
of --repeats runs after two warm-up runs (the first one compiles Jittor's kernels); "first run"
is that first warm-up, compile included.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CCA_SHAPES = [(2, 512, 64, 64), (1, 512, 97, 97)]
MODEL_CASES = [("train", (2, 3, 128, 128)), ("train", (1, 3, 256, 256)), ("eval", (1, 3, 512, 512))]
GEMM_SIZE = 2048


def memory_mib(field):
    """VmRSS or VmHWM of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def cca_flops(shape, backward):
    """Multiply-adds x 2 of the operator: energies (C') and aggregation (C) over H + W positions;
    the backward does each product twice more (d attention, d value; d query, d key)."""
    b, c, h, w = shape
    forward = 2 * b * h * w * (h + w) * (c + c // 8)
    return forward * 3 if backward else forward


# --- Jittor side -------------------------------------------------------------------------------

def jittor_cca_step(target, shape, backward):
    import jittor as jt
    from models.cca import CrissCrossAttention, criss_cross_attention, criss_cross_attention_bmm
    b, c, h, w = shape
    if target == "module":
        module = CrissCrossAttention(c)
        module.gamma.assign(jt.array([0.1]))
        x = jt.randn(shape)
        inputs = [x] + module.parameters()
        forward = lambda: module(x)  # noqa: E731
    else:
        op = criss_cross_attention if target == "operator (fused)" else criss_cross_attention_bmm
        inputs = [jt.randn(b, c // 8, h, w), jt.randn(b, c // 8, h, w), jt.randn(b, c, h, w)]
        forward = lambda: op(*inputs)  # noqa: E731
    upstream = jt.randn(shape).stop_grad()
    jt.sync(inputs + [upstream])  # Jittor creates arrays lazily; PyTorch's exist before the baseline

    def step():
        out = forward()
        jt.sync(jt.grad((out * upstream).sum(), inputs) if backward else [out])
        jt.sync_all(True)
    return step


def jittor_sgd_step(model, optimizer, x, labels):
    """One SGD step on the main + 0.4 x DSN cross entropy at label resolution (the training loss of
    losses.py, as train.py computes it); returns the loss."""
    from losses import segmentation_loss
    main, aux = model(x)
    loss = segmentation_loss(main, labels) + 0.4 * segmentation_loss(aux, labels)
    optimizer.step(loss)
    return loss


def jittor_model_step(backbone, mode, shape):
    shape = tuple(shape)
    import jittor as jt
    from jittor import nn
    from models import build_ccnet
    model = build_ccnet(backbone, num_classes=150)
    x = jt.randn(shape)
    jt.sync([x] + model.parameters())  # Jittor creates arrays lazily; PyTorch's exist at once
    if mode == "eval":
        model.eval()

        def step():
            with jt.no_grad():
                model(x).sync()
            jt.sync_all(True)
        return step
    labels = jt.array(np.random.default_rng(0).integers(0, 150, (shape[0],) + shape[2:])).sync()
    optimizer = nn.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        jittor_sgd_step(model, optimizer, x, labels)
        jt.sync_all(True)
    return step


def jittor_gemm_step():
    import jittor as jt
    a, b = jt.randn(GEMM_SIZE, GEMM_SIZE), jt.randn(GEMM_SIZE, GEMM_SIZE)

    def step():
        jt.matmul(a, b).sync()
        jt.sync_all(True)
    return step


# --- PyTorch side ------------------------------------------------------------------------------

def torch_cca_step(target, shape, backward):
    import torch
    from reference.torch_cca import CrissCrossAttention, criss_cross_attention
    b, c, h, w = shape
    if target == "module":
        module = CrissCrossAttention(c)
        with torch.no_grad():
            module.gamma.fill_(0.1)
        x = torch.randn(shape, requires_grad=backward)
        inputs = [x] + list(module.parameters())
        forward = lambda: module(x)  # noqa: E731
    else:
        inputs = [torch.randn(b, c // 8, h, w, requires_grad=backward),
                  torch.randn(b, c // 8, h, w, requires_grad=backward),
                  torch.randn(b, c, h, w, requires_grad=backward)]
        forward = lambda: criss_cross_attention(*inputs)  # noqa: E731
    upstream = torch.randn(shape)

    def step():
        with torch.set_grad_enabled(backward):
            out = forward()
            if backward:
                torch.autograd.grad(out, inputs, upstream)
    return step


def torch_model_step(backbone, mode, shape):
    shape = tuple(shape)
    import torch
    from reference.torch_models import CCNet, CCNetVAN, sgd_step
    model = CCNet(150) if backbone == "resnet101" else CCNetVAN(150)
    x = torch.randn(shape)
    if mode == "eval":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
        return step
    model.train()
    labels = torch.randint(0, 150, (shape[0],) + shape[2:])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return lambda: sgd_step(model, optimizer, x, labels)


def torch_gemm_step():
    import torch
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    return lambda: torch.mm(a, b)


# --- measurement -------------------------------------------------------------------------------

def make_step(case):
    framework, kind = case["framework"], case["kind"]
    if framework == "jittor":
        import jittor_env  # noqa: F401
        makers = {"cca": jittor_cca_step, "model": jittor_model_step, "gemm": jittor_gemm_step}
    else:
        makers = {"cca": torch_cca_step, "model": torch_model_step, "gemm": torch_gemm_step}
    return makers[kind](*case["args"])


def measure(case, repeats):
    """In a child process: first-run, median seconds and peak MiB of one step."""
    step = make_step(case)
    baseline = memory_mib("VmRSS")
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"first": first, "seconds": statistics.median(times), "peak_mib": memory_mib("VmHWM") - baseline}


def run(case, repeats):
    cmd = [sys.executable, __file__, "--child", json.dumps(case), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench: {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def both(kind, args, repeats, with_torch, jittor_only=False):
    jt_row = run(dict(framework="jittor", kind=kind, args=args), repeats)
    pt_row = None
    if with_torch and not jittor_only:
        pt_row = run(dict(framework="torch", kind=kind, args=args), repeats)
    return jt_row, pt_row


def fmt(row, key, spec):
    return format(row[key], spec) if row else "-"


def gemm_peak(repeats, with_torch):
    flops = 2 * GEMM_SIZE ** 3
    jt_row, pt_row = both("gemm", [], repeats, with_torch)
    rates = {"Jittor (oneDNN)": flops / jt_row["seconds"] / 1e9}
    if pt_row:
        rates["PyTorch"] = flops / pt_row["seconds"] / 1e9
    print(f"GEMM peak, {GEMM_SIZE}^3 float32: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    return max(rates.values())


def cca_table(repeats, with_torch, peak):
    print("\n| case | shape (B,C,H,W) | pass | Jittor s | PyTorch s | Jittor / PyTorch | "
          "Jittor GFLOP/s (% of peak) | Jittor MiB | PyTorch MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in CCA_SHAPES:
        for target in ("operator (fused)", "operator (bmm reference)", "module"):
            for backward in (False, True):
                jt_row, pt_row = both("cca", [target, shape, backward], repeats, with_torch,
                                      jittor_only=target == "operator (bmm reference)")
                ratio = f"{jt_row['seconds'] / pt_row['seconds']:.2f}x" if pt_row else "-"
                rate = ""
                if target.startswith("operator"):
                    gflops = cca_flops(shape, backward) / jt_row["seconds"] / 1e9
                    rate = f"{gflops:.1f} ({100 * gflops / peak:.0f}%)"
                print(f"| {target} | {','.join(map(str, shape))} | {'fwd+bwd' if backward else 'fwd'} | "
                      f"{jt_row['seconds']:.3f} | {fmt(pt_row, 'seconds', '.3f')} | {ratio} | {rate} | "
                      f"{jt_row['peak_mib']:.0f} | {fmt(pt_row, 'peak_mib', '.0f')} |", flush=True)


def model_table(repeats, with_torch):
    print("\n| model | step | input (B,C,H,W) | Jittor s | PyTorch s | Jittor / PyTorch | "
          "Jittor first run s | Jittor MiB | PyTorch MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backbone in ("resnet101", "van_base"):
        for mode, shape in MODEL_CASES:
            jt_row, pt_row = both("model", [backbone, mode, shape], repeats, with_torch)
            ratio = f"{jt_row['seconds'] / pt_row['seconds']:.2f}x" if pt_row else "-"
            print(f"| CCNet {backbone} | {mode} | {','.join(map(str, shape))} | {jt_row['seconds']:.3f} | "
                  f"{fmt(pt_row, 'seconds', '.3f')} | {ratio} | {jt_row['first']:.1f} | "
                  f"{jt_row['peak_mib']:.0f} | {fmt(pt_row, 'peak_mib', '.0f')} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--only", choices=["all", "cca", "model"], default="all",
                        help="which tables to print (default all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.repeats)))
        return
    with_torch = torch_available()
    print(f"{os.cpu_count()} cores; PyTorch column: {'yes' if with_torch else 'no (torch not importable)'}")
    if args.only in ("all", "cca"):
        cca_table(args.repeats, with_torch, gemm_peak(args.repeats, with_torch))
    if args.only in ("all", "model"):
        model_table(args.repeats, with_torch)


if __name__ == "__main__":
    main()
