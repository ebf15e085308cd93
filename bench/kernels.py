"""Where one training step's time goes: Jittor's kernels and PyTorch's operators, the largest first.

    python bench/kernels.py                                   (CCNet-R101 and CCNet-VAN-base)
    python bench/kernels.py --backbones resnet101 --shape 1 3 256 256 --top 20

The step is bench/speed.py's (forward, main + 0.4 x DSN cross entropy, backward, SGD). Each
framework runs in its own process: two warm-up steps (the first compiles Jittor's kernels), then
one profiled step. Jittor's rows are its compiled kernels (jt.profile_scope): oneDNN calls by name,
fused element-wise kernels by the operators fused into them; PyTorch's are its operators'
self CPU time (torch.profiler), so a PyTorch row excludes the operators it calls. Shares are of the
sum of the rows, which leaves out the Python and scheduling time between kernels.
"""
import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHOWN_OPS = 4  # operator names shown for a fused Jittor kernel


def jittor_kernel_label(name):
    """A short label of a Jittor kernel: oneDNN's by name, a fused kernel by its operators."""
    if not name.startswith("«"):
        return name.split("«")[0]
    ops = [op for op in re.findall(r"opkey\d+:([a-z_]+)", name) if op != "array"]
    distinct = list(dict.fromkeys(ops))
    more = f"+{len(distinct) - SHOWN_OPS}" if len(distinct) > SHOWN_OPS else ""
    return "fused " + ",".join(distinct[:SHOWN_OPS]) + more


def jittor_rows(backbone, shape):
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import jittor_env  # noqa: F401
    import jittor as jt
    from jittor import nn
    from models import build_ccnet
    from speed import jittor_sgd_step
    model = build_ccnet(backbone, num_classes=150)
    x = jt.randn(shape)
    labels = jt.array(np.random.default_rng(0).integers(0, 150, (shape[0],) + tuple(shape[2:])))
    optimizer = nn.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        jittor_sgd_step(model, optimizer, x, labels)
        jt.sync_all(True)
    with jt.profile_scope(warmup=0, rerun=0) as report:
        jittor_sgd_step(model, optimizer, x, labels)
        jt.sync_all(True)
    header = report[0]
    rows = defaultdict(lambda: [0, 0.0])
    for row in report[1:]:
        record = dict(zip(header, row))
        label = jittor_kernel_label(record["Name"])
        rows[label][0] += int(record["Count"])
        rows[label][1] += float(record["TotalTime"]) / 1e9  # ns
    return rows


def torch_rows(backbone, shape):
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch_models import CCNet, CCNetVAN, sgd_step
    model = (CCNet(150) if backbone == "resnet101" else CCNetVAN(150)).train()
    x = torch.randn(shape)
    labels = torch.randint(0, 150, (shape[0],) + tuple(shape[2:]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        sgd_step(model, optimizer, x, labels)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sgd_step(model, optimizer, x, labels)
    return {event.key: [event.count, event.self_cpu_time_total / 1e6] for event in prof.key_averages()}


def run_child(framework, backbone, shape):
    cmd = [sys.executable, __file__, "--child", framework, "--backbones", backbone, "--shape", *map(str, shape)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"profile: {framework} {backbone} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def table(title, rows, top):
    total = sum(seconds for _, seconds in rows.values())
    ranked = sorted(rows.items(), key=lambda item: -item[1][1])
    lines = [f"{title}: {1000 * total:.0f} ms in {len(rows)} kinds of kernel", "",
             "| kernel / operator | calls | ms | share |", "|---|---|---|---|"]
    for label, (count, seconds) in ranked[:top]:
        lines.append(f"| {label} | {count} | {1000 * seconds:.1f} | {100 * seconds / total:.1f}% |")
    rest = ranked[top:]
    if rest:
        seconds = sum(s for _, (_, s) in rest)
        lines.append(f"| {len(rest)} others | {sum(c for _, (c, _) in rest)} | {1000 * seconds:.1f} "
                     f"| {100 * seconds / total:.1f}% |")
    return "\n".join(lines)


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet101", "van_base"], choices=["resnet101", "van_base"])
    p.add_argument("--shape", type=int, nargs=4, default=[2, 3, 128, 128], metavar=("N", "C", "H", "W"))
    p.add_argument("--top", type=int, default=12, help="rows shown per table")
    p.add_argument("--child", choices=["jittor", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rows = (jittor_rows if args.child == "jittor" else torch_rows)(args.backbones[0], args.shape)
        print(json.dumps(rows))
        return
    frameworks = ["jittor"] + (["torch"] if torch_available() else [])
    for backbone in args.backbones:
        for framework in frameworks:
            name = "Jittor" if framework == "jittor" else "PyTorch"
            rows = run_child(framework, backbone, args.shape)
            print(table(f"{name}, CCNet {backbone} train step, input {'x'.join(map(str, args.shape))}", rows, args.top))
            print()


if __name__ == "__main__":
    main()
