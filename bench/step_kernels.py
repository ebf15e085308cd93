"""Where one training step's time goes: Jittor's kernels and PyTorch's operators, the largest first.

    python bench/step_kernels.py                                   (CCNet-R101 and CCNet-VAN-base)
    python bench/step_kernels.py --backbones resnet101 --shape 1 3 256 256 --top 20
    python bench/step_kernels.py --gpu --shape 4 3 512 512         (on an NVIDIA GPU, torch with CUDA)

The step is bench/speed.py's (forward, main + 0.4 x DSN cross entropy, backward, SGD). Each
framework runs in its own process: two warm-up steps (the first compiles Jittor's kernels), then
one profiled step. Jittor's rows are its compiled kernels (jt.profile_scope): oneDNN calls by name,
fused element-wise kernels by the operators fused into them; PyTorch's are its operators'
self CPU time (torch.profiler), so a PyTorch row excludes the operators it calls. Shares are of the
sum of the rows, which leaves out the Python and scheduling time between kernels.

With --gpu both run on the GPU and the rows are GPU kernels by name with their GPU time, as CUPTI
records them through torch.profiler (which sees every kernel of the process, Jittor's too). Each
table then starts with the step's wall time, Jittor's Python graph building (Jittor runs nothing
until the step is complete, so the GPU waits for it), the kernels' sum and the GPU's busy time:
wall time beyond the busy time is the GPU waiting for the host. Then the host's side, from the CUDA
API calls CUPTI records: how many, the host time in them (of which waiting for the GPU in its
synchronisations) and the host time between them, which is the framework's own work.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHOWN_OPS = 4  # operator names shown for a fused Jittor kernel
KERNEL_NAME = 110  # characters kept of a GPU kernel's name (cuDNN's run to several hundred)


def jittor_kernel_label(name):
    """A short label of a Jittor kernel: oneDNN's by name, a fused kernel by its operators."""
    if not name.startswith("«"):
        return name.split("«")[0]
    ops = [op for op in re.findall(r"opkey\d+:([a-z_]+)", name) if op != "array"]
    distinct = list(dict.fromkeys(ops))
    more = f"+{len(distinct) - SHOWN_OPS}" if len(distinct) > SHOWN_OPS else ""
    return "fused " + ",".join(distinct[:SHOWN_OPS]) + more


def jittor_training(backbone, shape):
    """(build, run) of bench/speed.py's train step in Jittor: building its graph (Python; Jittor runs
    nothing yet) and running it to the end."""
    import jittor_env  # noqa: F401
    import jittor as jt
    from jittor import nn
    from models import build_ccnet
    from bench.speed import jittor_sgd_step
    model = build_ccnet(backbone, num_classes=150)
    x = jt.randn(shape)
    labels = jt.array(np.random.default_rng(0).integers(0, 150, (shape[0],) + tuple(shape[2:])))
    optimizer = nn.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return (lambda: jittor_sgd_step(model, optimizer, x, labels)), (lambda: jt.sync_all(True))


def torch_training(backbone, shape, device):
    """The same step in PyTorch (reference/torch_models.py) on `device`."""
    import torch
    from reference.torch_models import CCNet, CCNetVAN, sgd_step
    model = (CCNet(150) if backbone == "resnet101" else CCNetVAN(150)).to(device).train()
    x = torch.randn(shape, device=device)
    labels = torch.randint(0, 150, (shape[0],) + tuple(shape[2:]), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return lambda: sgd_step(model, optimizer, x, labels)


def jittor_rows(backbone, shape):
    build, run = jittor_training(backbone, shape)  # first: it starts Jittor through jittor_env
    import jittor as jt
    for _ in range(2):
        build()
        run()
    with jt.profile_scope(warmup=0, rerun=0) as report:
        build()
        run()
    header = report[0]
    rows = defaultdict(lambda: [0, 0.0])
    for row in report[1:]:
        record = dict(zip(header, row))
        label = jittor_kernel_label(record["Name"])
        rows[label][0] += int(record["Count"])
        rows[label][1] += float(record["TotalTime"]) / 1e9  # ns
    return rows


def torch_rows(backbone, shape):
    from torch.profiler import ProfilerActivity, profile
    step = torch_training(backbone, shape, "cpu")
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {event.key: [event.count, event.self_cpu_time_total / 1e6] for event in prof.key_averages()}


def cuda_kernels(step):
    """Kernels CUPTI records while `step` runs (it must wait for the GPU), by name: [calls, seconds];
    the GPU's busy time (the union of the kernels' intervals) and the span from first to last."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
    rows, intervals, api = defaultdict(lambda: [0, 0.0]), [], []
    for event in prof.events():
        start, end = event.time_range.start / 1e6, event.time_range.end / 1e6  # from microseconds
        if event.device_type != torch.autograd.DeviceType.CUDA:
            if event.name.startswith("cu"):  # the CUDA runtime and driver API (cudaLaunchKernel, ...)
                api.append((event.name, start, end))
            continue
        if end <= start:
            continue
        rows[event.name[:KERNEL_NAME]][0] += 1
        rows[event.name[:KERNEL_NAME]][1] += end - start
        intervals.append((start, end))
    busy, span = busy_and_span(intervals)
    return rows, dict(host_summary(api), gpu_busy_s=busy, gpu_span_s=span, kernels=len(intervals))


def host_summary(calls):
    """From (name, start, end) of CUDA API calls on the host: their number, the time in them, the
    part of it spent waiting for the GPU, and the host time between calls (the framework's own)."""
    waiting = sum(end - start for name, start, end in calls if name.endswith("Synchronize"))
    in_calls, span = busy_and_span([(start, end) for _, start, end in calls])
    return {"api_calls": len(calls), "api_s": sum(end - start for _, start, end in calls),
            "api_waiting_s": waiting, "host_between_api_s": span - in_calls}


def busy_and_span(intervals):
    """The length of the union of (start, end) intervals (kernels overlap on several streams) and
    the time from the first start to the last end."""
    busy, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            busy, reach = busy + end - start, end
        elif end > reach:
            busy, reach = busy + end - reach, end
    span = max(e for _, e in intervals) - min(s for s, _ in intervals) if intervals else 0.0
    return busy, span


def gpu_rows(build, run, separate_build):
    """The step's wall time and building time (medians of 5 after 2 warm-ups; the building is
    reported only where it is separate from running, as in Jittor), then its kernels."""
    walls, builds = [], []
    for i in range(7):
        start = time.perf_counter()
        build()
        built = time.perf_counter()
        run()
        if i >= 2:
            walls.append(time.perf_counter() - start)
            builds.append(built - start)
    rows, summary = cuda_kernels(lambda: (build(), run()))
    summary.update(wall_s=float(np.median(walls)),
                   python_build_s=float(np.median(builds)) if separate_build else None)
    return {"rows": rows, "summary": summary}


def jittor_gpu_rows(backbone, shape):
    import torch  # noqa: F401  (first, as in every GPU run measured: CUPTI through torch.profiler)
    build, run = jittor_training(backbone, shape)  # first: it starts Jittor through jittor_env
    import jittor as jt
    if not jt.flags.use_cuda:
        sys.exit("--gpu: Jittor is not using a GPU here")
    return gpu_rows(build, run, separate_build=True)


def torch_gpu_rows(backbone, shape):
    import torch
    if not torch.cuda.is_available():
        sys.exit("--gpu: torch has no CUDA here")
    return gpu_rows(torch_training(backbone, shape, "cuda"), torch.cuda.synchronize, separate_build=False)


def run_child(framework, backbone, shape, gpu):
    cmd = [sys.executable, __file__, "--child", framework, "--backbones", backbone, "--shape", *map(str, shape)]
    cmd += ["--gpu"] if gpu else []
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


def gpu_summary(summary):
    """The first line of a --gpu table: where the step's wall time went."""
    build = summary["python_build_s"]
    return (f"step {1000 * summary['wall_s']:.1f} ms (median of 5)"
            + (f", of which Python graph building {1000 * build:.1f} ms" if build is not None else "")
            + f"; {summary['kernels']} kernels, GPU busy {1000 * summary['gpu_busy_s']:.1f} ms "
            f"over the profiled step's {1000 * summary['gpu_span_s']:.1f} ms; host: {summary['api_calls']} "
            f"CUDA API calls, {1000 * summary['api_s']:.1f} ms in them ({1000 * summary['api_waiting_s']:.1f} "
            f"ms waiting for the GPU), {1000 * summary['host_between_api_s']:.1f} ms between them")


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet101", "van_base"], choices=["resnet101", "van_base"])
    p.add_argument("--shape", type=int, nargs=4, default=[2, 3, 128, 128], metavar=("N", "C", "H", "W"))
    p.add_argument("--top", type=int, default=12, help="rows shown per table")
    p.add_argument("--gpu", action="store_true", help="both frameworks on the GPU; rows are GPU kernels "
                   "(needs an NVIDIA GPU and torch with CUDA)")
    p.add_argument("--child", choices=["jittor", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.gpu:
            result = (jittor_gpu_rows if args.child == "jittor" else torch_gpu_rows)(args.backbones[0], args.shape)
        else:
            result = (jittor_rows if args.child == "jittor" else torch_rows)(args.backbones[0], args.shape)
        print(json.dumps(result))
        return
    if args.gpu:
        from jittor_setup.cuda import gpu_visible  # no Jittor start in this parent process
        if not gpu_visible():
            sys.exit("--gpu: no NVIDIA GPU is visible here")
        if not torch_available():
            sys.exit("--gpu reads the GPU's kernels through torch.profiler: install torch with CUDA")
    frameworks = ["jittor"] + (["torch"] if torch_available() else [])
    for backbone in args.backbones:
        for framework in frameworks:
            name = "Jittor" if framework == "jittor" else "PyTorch"
            result = run_child(framework, backbone, args.shape, args.gpu)
            title = f"{name}, CCNet {backbone} train step, input {'x'.join(map(str, args.shape))}"
            if args.gpu:
                print(f"{title}, on the GPU: {gpu_summary(result['summary'])}")
                result = result["rows"]
                title = "GPU kernels"
            print(table(title, result, args.top))
            print()


if __name__ == "__main__":
    main()
