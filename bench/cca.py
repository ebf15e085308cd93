"""Time and peak memory of criss-cross attention on this machine: the project's Jittor operator
and module against the same operator in PyTorch (bench/torch_cca.py, when torch is importable),
plus whole-model rows.

    python bench/cca.py                 # the full table
    python bench/cca.py --repeats 3 --only cca

Each measurement runs in a fresh process, so its peak memory is its own: the rise of the peak
resident set (VmHWM) over what the process held once the inputs existed. Times are medians of
--repeats runs after two warm-up runs (the first one compiles Jittor's kernels).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CCA_SHAPES = [(2, 512, 64, 64), (1, 512, 97, 97)]
MODEL_CASES = [("ccnet_resnet101", (2, 3, 128, 128))]


def memory_mib(field):
    """VmRSS or VmHWM of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def jittor_step(target, shape, backward):
    sys.path.insert(0, str(ROOT))
    import jittor_env  # noqa: F401
    import jittor as jt
    from models.cca import CrissCrossAttention, criss_cross_attention

    b, c, h, w = shape
    if target == "operator":
        inputs = [jt.randn(b, c // 8, h, w), jt.randn(b, c // 8, h, w), jt.randn(b, c, h, w)]
        forward = lambda: criss_cross_attention(*inputs)  # noqa: E731
    elif target == "module":
        module = CrissCrossAttention(c)
        module.gamma.assign(jt.array([0.1]))
        x = jt.randn(shape)
        inputs = [x] + module.parameters()
        forward = lambda: module(x)  # noqa: E731
    else:
        from models import build_ccnet
        model = build_ccnet(target.replace("ccnet_", ""), num_classes=150)
        model.train()
        x = jt.randn(shape)
        inputs = [p for p in model.parameters() if not p.is_stop_grad()]
        forward = lambda: model(x)[0]  # noqa: E731
    upstream = jt.randn(forward().shape).stop_grad()
    jt.sync_all(True)

    def step():
        out = forward()
        if backward:
            jt.sync(jt.grad((out * upstream).sum(), inputs))
        else:
            out.sync()
        jt.sync_all(True)
    return step


def torch_step(target, shape, backward):
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from torch_cca import CrissCrossAttention, criss_cross_attention

    b, c, h, w = shape
    grad_mode = torch.enable_grad() if backward else torch.no_grad()
    if target == "operator":
        inputs = [torch.randn(b, c // 8, h, w, requires_grad=backward),
                  torch.randn(b, c // 8, h, w, requires_grad=backward),
                  torch.randn(b, c, h, w, requires_grad=backward)]
        forward = lambda: criss_cross_attention(*inputs)  # noqa: E731
    else:
        module = CrissCrossAttention(c)
        with torch.no_grad():
            module.gamma.fill_(0.1)
        x = torch.randn(shape, requires_grad=backward)
        inputs = [x] + list(module.parameters())
        forward = lambda: module(x)  # noqa: E731
    with torch.no_grad():
        upstream = torch.randn(forward().shape)

    def step():
        with grad_mode:
            out = forward()
            if backward:
                torch.autograd.grad(out, inputs, upstream)
    return step


def measure(framework, target, shape, backward, repeats):
    """Run in a child process: median seconds and peak MiB of one forward (+ backward) pass."""
    make = jittor_step if framework == "jittor" else torch_step
    step = make(target, shape, backward)
    baseline = memory_mib("VmRSS")
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": memory_mib("VmHWM") - baseline}


def run_child(case, repeats):
    cmd = [sys.executable, __file__, "--child", json.dumps(case), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench: {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def cases(only):
    if only in ("all", "cca"):
        for shape in CCA_SHAPES:
            for target in ("operator", "module"):
                yield target, shape, True
    if only in ("all", "model"):
        for target, shape in MODEL_CASES:
            yield target, shape, False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--only", choices=["all", "cca", "model"], default="all",
                        help="which rows to run (default all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = json.loads(args.child)
        print(json.dumps(measure(case["framework"], case["target"], tuple(case["shape"]),
                                 case["backward"], args.repeats)))
        return

    with_torch = torch_available()
    print(f"{os.cpu_count()} cores; PyTorch column: {'yes' if with_torch else 'no (torch not importable)'}")
    header = "| case | shape (B,C,H,W) | pass | Jittor s | PyTorch s | Jittor / PyTorch | Jittor MiB | PyTorch MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for target, shape, mirrored in cases(args.only):
        for backward in (False, True):
            row = {}
            for framework in ("jittor", "torch"):
                if framework == "torch" and not (with_torch and mirrored):
                    continue
                case = dict(framework=framework, target=target, shape=shape, backward=backward)
                row[framework] = run_child(case, args.repeats)
            jt_row, pt_row = row["jittor"], row.get("torch")
            ratio = f"{jt_row['seconds'] / pt_row['seconds']:.2f}x" if pt_row else "-"
            pt_s = f"{pt_row['seconds']:.3f}" if pt_row else "-"
            pt_mib = f"{pt_row['peak_mib']:.0f}" if pt_row else "-"
            print(f"| {target} | {','.join(map(str, shape))} | {'fwd+bwd' if backward else 'fwd'} "
                  f"| {jt_row['seconds']:.3f} | {pt_s} | {ratio} | {jt_row['peak_mib']:.0f} | {pt_mib} |",
                  flush=True)


if __name__ == "__main__":
    main()
