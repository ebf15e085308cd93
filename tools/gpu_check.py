"""Check Jittor on this machine's GPU: start-up, the criss-cross attention operator, a training-mode
norm, the training loss and both CCNets against the CPU, training steps, speed and memory against
PyTorch on the same GPU (train steps at batch 4 and 16, crop 512, timed after a warm-up past Jittor's
compiler pre-pass; eval of one 512 x 512 image), and train.py itself at the recipe's batch on
generated data in ADE20K's layout (seconds per iteration over iterations 41-60).

    make gpu-check                      # python tools/gpu_check.py --out work_dirs/gpu_check

Writes gpu_check.json and gpu_check.md to --out. Each stage runs in its own process under a time
limit; one that fails or runs out of time is reported and the others go on. The CPU results the GPU
is compared with are computed first in a CPU-only process (or read from --reference, written by an
earlier run, also on another machine). Without a GPU only that CPU half runs, and the table says so.

Accuracy is compared with TF32 off (NVIDIA_TF32_OVERRIDE=0), so both sides compute in true fp32;
speed is measured with each framework's defaults. GPU memory is what nvidia-smi reports for the
stage's process (the framework's cached pool plus its CUDA context), for Jittor and PyTorch alike.
Jittor's steps are bound by the host's CPU, so the report also names the host's CPU and times a fixed
pure-Python loop on it: timings compare between machines whose hosts compare.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("resnet101", "van_base")
CCA_SHAPE = (2, 64, 13, 17)  # B, C, H, W (C' = C / 8): small, non-square
COMPARE_SHAPE = (1, 3, 128, 128)
CROP = 512
TRAIN_BATCHES, EVAL_SHAPE = (4, 16), (1, 3, CROP, CROP)
# Jittor's parallel compiler re-keys every fused operator of each step until about 100,000 operators
# have run without a new compile: some 35 CCNet-R101 steps. Timing starts after that.
TRAIN_WARMUP, TRAIN_TIMED, EVAL_REPEATS, WARMUP = 40, 10, 10, 2
TRAINPY_ITERS, TRAINPY_FROM = 60, 40  # train.py's seconds per iteration over iterations 41-60
RECIPE_ITERS = 80_000
TOLERANCE = 1e-4  # max |gpu - cpu| / max |cpu|
TARGET_TIME = {("train", 16): 1.1, ("train", 4): 1.5, ("eval", 1): 2.5}  # Jittor's time / PyTorch's
NUM_CLASSES = 150
LOSS_SHAPE = (2, NUM_CLASSES, 9, 11)  # logits at stride 8 of labels 72 x 88


# --- what each stage computes, in its own process -------------------------------------------------

def seeded_model(backbone, seed=0):
    """CCNet in eval mode with weights from numpy's generator, identical on every machine."""
    import jittor as jt
    from models import build_ccnet
    model = build_ccnet(backbone, num_classes=NUM_CLASSES)
    rng = np.random.default_rng(seed)
    for name, var in sorted(model.state_dict().items()):
        shape = tuple(var.shape)
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("running_mean", "bias")):
            value = rng.normal(0, 0.1, shape)
        elif len(shape) > 1:  # He initialisation keeps 100 layers' activations finite
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
        elif name.endswith("weight"):
            value = rng.uniform(0.5, 1.0, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        var.assign(jt.array(value.astype(np.float32)))
    return model.eval()


def training_norm(rng):
    """A training-mode norm + residual + ReLU (a ResNet block's end) and its gradients: on the CPU
    the CPU kernels compute it, on a GPU the GPU's formulation."""
    import jittor as jt
    from models.norm import ABN
    c = CCA_SHAPE[1]
    norm = ABN(c, activation="relu")
    norm.weight.assign(jt.array(rng.uniform(-1.5, 1.5, c).astype(np.float32)))
    norm.bias.assign(jt.array(rng.normal(size=c).astype(np.float32)))
    x, residual = [jt.array(rng.normal(1.0, 2.0, CCA_SHAPE).astype(np.float32)) for _ in range(2)]
    out = norm(x, residual=residual)
    names = ("x", "weight", "bias", "residual")
    grads = jt.grad((out * jt.array(rng.normal(size=CCA_SHAPE).astype(np.float32))).sum(),
                    [x, norm.weight, norm.bias, residual])
    results = {"norm_forward": out.numpy(), "norm_running_var": norm.running_var.numpy()}
    results.update({f"norm_grad_{n}": g.numpy() for n, g in zip(names, grads)})
    return results


def training_loss(rng):
    """The training loss (logits upsampled to the labels, cross-entropy over valid pixels) and its
    logits' gradient: on the CPU the cross-entropy kernel computes it, on a GPU Jittor operators."""
    import jittor as jt
    from losses import IGNORE, segmentation_loss
    logits = jt.array(rng.normal(0, 3, LOSS_SHAPE).astype(np.float32))
    n, _, h, w = LOSS_SHAPE
    labels = rng.integers(0, LOSS_SHAPE[1], (n, 8 * h, 8 * w)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    loss = segmentation_loss(logits, jt.array(labels))
    return {"loss": loss.numpy().reshape(1), "loss_grad_logits": jt.grad(loss, logits).numpy()}


def attention_and_models():
    """Criss-cross attention forward and input gradients, a training-mode norm and its gradients,
    the training loss and its gradient, and both CCNets' eval logits."""
    import jittor as jt
    from models.cca import criss_cross_attention
    rng = np.random.default_rng(1)
    b, c, h, w = CCA_SHAPE
    inputs = [rng.normal(size=s).astype(np.float32) for s in ((b, c // 8, h, w), (b, c // 8, h, w), (b, c, h, w))]
    upstream = rng.normal(size=CCA_SHAPE).astype(np.float32)
    query, key, value = [jt.array(a) for a in inputs]
    out = criss_cross_attention(query, key, value)
    grads = jt.grad((out * jt.array(upstream)).sum(), [query, key, value])
    results = {"cca_forward": out.numpy()}
    results.update({f"cca_grad_{n}": g.numpy() for n, g in zip(("query", "key", "value"), grads)})
    results.update(training_norm(rng))
    results.update(training_loss(rng))
    image = np.random.default_rng(2).normal(size=COMPARE_SHAPE).astype(np.float32)
    for backbone in BACKBONES:
        with jt.no_grad():
            results[f"{backbone}_logits"] = seeded_model(backbone)(jt.array(image)).numpy()
    return results


def stage_startup(_):
    import jittor_env
    import jittor as jt
    return {"stack": jittor_env.GPU_STACK, "use_cuda": int(jt.flags.use_cuda),
            "cudnn": jt.compile_extern.cudnn is not None, "gpu": gpu_name()}


def stage_reference(args):
    import jittor_env  # noqa: F401  (a CPU-only process: the parent hid the GPU)
    results = attention_and_models()
    np.savez(args["path"], **results)
    return {"path": args["path"], "finite": all(np.isfinite(v).all() for v in results.values())}


def stage_accuracy(args):
    import jittor_env  # noqa: F401
    import jittor as jt
    if not jt.flags.use_cuda:
        raise RuntimeError("Jittor is not using the GPU")
    reference = np.load(args["path"])
    rows = {}
    for name, value in attention_and_models().items():
        expected = reference[name]
        rows[name] = float(np.abs(value - expected).max() / np.abs(expected).max())
    return rows


def train_batch(batch):
    rng = np.random.default_rng(3)
    image = rng.normal(size=(batch, 3, CROP, CROP)).astype(np.float32)
    blocks = rng.integers(0, NUM_CLASSES, (batch, 8, 8))  # a learnable layout: 64 blocks per image
    labels = blocks.repeat(CROP // 8, axis=1).repeat(CROP // 8, axis=2).astype(np.int32)
    return image, labels


def timed(step, repeats):
    """(seconds of each call) of `step`, which must wait for the GPU before it returns."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def jittor_step(backbone, mode, batch):
    """One eval forward, or one train step (bench/speed.py's), of CCNet, and the list of its losses."""
    import jittor_env  # noqa: F401
    import jittor as jt
    from jittor import nn
    from models import build_ccnet
    from bench.speed import jittor_sgd_step
    model = build_ccnet(backbone, num_classes=NUM_CLASSES)
    losses = []
    if mode == "eval":
        model.eval()
        x = jt.array(np.random.default_rng(4).normal(size=EVAL_SHAPE).astype(np.float32))

        def step():
            with jt.no_grad():
                model(x).sync()
            jt.sync_all(True)
        return step, losses
    image, labels = train_batch(batch)
    x, y = jt.array(image), jt.array(labels)
    optimizer = nn.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        losses.append(float(jittor_sgd_step(model, optimizer, x, y).item()))
        jt.sync_all(True)
    return step, losses


def torch_step(backbone, mode, batch):
    """The same in PyTorch, on the GPU, with the models of reference/torch_models.py."""
    import torch
    from reference.torch_models import CCNet, CCNetVAN, sgd_step
    device = torch.device("cuda")
    model = (CCNet(NUM_CLASSES) if backbone == "resnet101" else CCNetVAN(NUM_CLASSES)).to(device)
    losses = []
    if mode == "eval":
        model.eval()
        x = torch.from_numpy(np.random.default_rng(4).normal(size=EVAL_SHAPE).astype(np.float32)).to(device)

        def step():
            with torch.no_grad():
                model(x)
            torch.cuda.synchronize()
        return step, losses
    image, labels = train_batch(batch)
    x, y = torch.from_numpy(image).to(device), torch.from_numpy(labels).long().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        losses.append(float(sgd_step(model, optimizer, x, y).item()))
        torch.cuda.synchronize()
    return step, losses


def stage_speed(args):
    make = jittor_step if args["framework"] == "jittor" else torch_step
    step, losses = make(args["backbone"], args["mode"], args.get("batch", 1))
    warmup = TRAIN_WARMUP if args["mode"] == "train" else WARMUP
    times = timed(step, warmup + (TRAIN_TIMED if args["mode"] == "train" else EVAL_REPEATS))
    return dict(summary(times, gpu_memory_mib(), warmup), losses=losses)


def summary(times, memory, warmup):
    """First call (kernel compiles included), median of the calls after the warm-up, memory."""
    return {"first_s": times[0], "seconds": statistics.median(times[warmup:]), "gpu_mib": memory}


def stage_trainpy(args):
    """train.py as a user runs it, at the recipe's batch, on generated data in ADE20K's layout:
    seconds per iteration over iterations from+1..iters (its own log, evaluation excluded)."""
    folder = Path(args["folder"])
    data, work = folder / "data", folder / "work"
    generate = [sys.executable, str(ROOT / "tools" / "make_synthetic_ade20k.py"), "--out", str(data),
                "--train", str(args["images"]), "--val", "1", "--size", str(args["size"])]
    subprocess.run(generate, check=True, capture_output=True, cwd=ROOT)
    command = [sys.executable, str(ROOT / "train.py"), "--backbone", args["backbone"], "--data-root", str(data),
               "--work-dir", str(work), "--overwrite", "--iters", str(args["iters"]), "--batch-size",
               str(args["batch"]), "--crop-size", str(args["crop"]), "--log-interval", str(args["iters"] - args["from"]),
               "--eval-interval", "0", "--ckpt-interval", str(10 * args["iters"])]
    if args.get("img_scale"):  # (the recipe's default otherwise)
        command += ["--img-scale", *map(str, args["img_scale"])]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"train.py exited {run.returncode}: {run.stderr.strip()[-500:]}")
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    last = next(r for r in reversed(records) if r.get("iter") == args["iters"] and "seconds_per_iter" in r)
    return {"seconds_per_iter": last["seconds_per_iter"], "loss": last["loss"]}


def gpu_memory_mib():
    """GPU memory nvidia-smi reports for this process, or None where it reports none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


STAGES = {"startup": stage_startup, "reference": stage_reference, "accuracy": stage_accuracy,
          "speed": stage_speed, "trainpy": stage_trainpy}


# --- the parent: stages in child processes, then the table -----------------------------------------

def run_stage(name, args, timeout, env=None):
    """Run one stage in a child process; its result, or {"error": ...}, and its wall time.

    On a fresh cache Jittor compiles its core, asks for a rerun and exits 0: it is run again."""
    result, wall = run_child(name, args, timeout, env)
    if result.get("error", "").startswith("exit 0:") and "rerun" in result["error"]:
        result, again = run_child(name, args, timeout - wall, env)
        wall += again
    return result, wall


def run_child(name, args, timeout, env):
    cmd = [sys.executable, __file__, "--child", name, json.dumps(args)]
    start = time.perf_counter()
    # A session of its own, so that a stage out of time is killed with Jittor's compiler processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, **(env or {})), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout} s"}, time.perf_counter() - start
    wall = time.perf_counter() - start
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip() or stdout.strip())[-3000:]
        return {"error": f"exit {proc.returncode}: {tail}"}, wall
    return json.loads(lines[-1][len("RESULT "):]), wall


def host_cpu():
    """The host's CPU model and cores, and the best of 5 timings of a fixed pure-Python loop."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    probe = min(timeit.repeat("sum(i * i for i in range(1000))", number=2000, repeat=5))
    return {"cpu": model, "cores": os.cpu_count(), "python_probe_ms": round(probe * 1e3, 1)}


def torch_cuda():
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


class Report:
    """Rows of (check, result, target, ok) and the raw results, written after every stage."""

    def __init__(self, out, budget):
        self.out, self.budget, self.start = out, budget, time.perf_counter()
        self.rows, self.raw, self.skipped = [], {}, []
        self.host = host_cpu()

    def host_line(self):
        return (f"Host: {self.host['cpu']}, {self.host['cores']} cores; a fixed pure-Python loop took "
                f"{self.host['python_probe_ms']} ms.")

    def left(self):
        return self.budget - (time.perf_counter() - self.start)

    def add(self, check, result, target, ok):
        self.rows.append((check, result, target, ok))
        print(f"{check:<44} {result:<34} {target:<22} {'ok' if ok else ('-' if ok is None else 'MISSED')}",
              flush=True)

    def write(self):
        elapsed = time.perf_counter() - self.start
        data = {"date": time.strftime("%Y-%m-%d"), "gpu": self.raw.get("startup", {}).get("gpu"),
                "seconds": round(elapsed, 1), "budget_s": self.budget, "host": self.host, "skipped": self.skipped,
                "rows": [dict(zip(("check", "result", "target", "ok"), row)) for row in self.rows],
                "raw": self.raw}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")
        lines = [f"GPU check, {data['date']}, {data['gpu'] or 'no GPU'}: {elapsed:.0f} s of a "
                 f"{self.budget} s budget", "", self.host_line(), "",
                 "| check | result | target | |", "| --- | --- | --- | --- |"]
        lines += [f"| {c} | {r} | {t} | {'ok' if ok else ('-' if ok is None else '**missed**')} |"
                  for c, r, t, ok in self.rows]
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(self.skipped) + "."]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def stage(report, key, name, args, timeout, env=None):
    timeout = int(min(timeout, report.left()))
    if timeout < 10:
        report.skipped.append(f"{key} (time budget spent)")
        return None
    result, wall = run_stage(name, args, timeout, env)
    report.raw[key] = dict(result, wall_s=round(wall, 1))
    if "error" in result:
        report.add(key, "failed: " + result["error"].splitlines()[-1][:60], "", False)
        return None
    return result


def check_accuracy(report, reference):
    result = stage(report, "accuracy", "accuracy", {"path": str(reference)}, 420,
                   env={"NVIDIA_TF32_OVERRIDE": "0"})
    for name, error in (result or {}).items():
        report.add(f"{name.replace('_', ' ')} vs CPU", f"max rel. error {error:.1e}", f"<= {TOLERANCE:.0e}",
                   error <= TOLERANCE)


def check_backbone(report, backbone, with_torch):
    for mode, batch in [("train", b) for b in TRAIN_BATCHES] + [("eval", 1)]:
        shape = (batch, 3, CROP, CROP)
        what = f"{backbone} {mode} {'x'.join(map(str, shape))}"
        args = {"backbone": backbone, "mode": mode, "batch": batch}
        jt_row = stage(report, f"jittor {what}", "speed", dict(args, framework="jittor"), 420)
        pt_row = stage(report, f"torch {what}", "speed", dict(args, framework="torch"), 300) \
            if with_torch else None
        if jt_row and mode == "train":
            losses = jt_row["losses"]
            report.add(f"{backbone} batch {batch}: {len(losses)} train steps, loss",
                       f"{losses[0]:.3f} -> {losses[-1]:.3f}",
                       "finite, decreasing",
                       bool(np.isfinite(losses).all() and losses[-1] < losses[0]))
        if jt_row:
            ratio = jt_row["seconds"] / pt_row["seconds"] if pt_row else None
            report.add(f"{what}: s", f"{jt_row['seconds']:.4f} (PyTorch {pt_row['seconds']:.4f})"
                       if pt_row else f"{jt_row['seconds']:.4f} (first {jt_row['first_s']:.1f})",
                       f"<= {TARGET_TIME[mode, batch]}x PyTorch", ratio <= TARGET_TIME[mode, batch] if ratio else None)
            jt_mem, pt_mem = jt_row["gpu_mib"], (pt_row or {}).get("gpu_mib")
            if jt_mem is not None:
                report.add(f"{what}: GPU MiB", f"{jt_mem:.0f}" + (f" (PyTorch {pt_mem:.0f})" if pt_mem else ""),
                           "<= PyTorch", jt_mem <= pt_mem if pt_mem else None)
        report.write()


def check_trainpy(report, backbone, folder, batch=16, size=CROP, iters=TRAINPY_ITERS, start=TRAINPY_FROM,
                  img_scale=None):
    """train.py's own seconds per iteration at `batch` (the recipe's 16, crop 512, its default
    workers and image scale), and the recipe's wall time at that speed."""
    args = {"backbone": backbone, "batch": batch, "crop": size, "size": size, "images": 2 * batch,
            "iters": iters, "from": start, "folder": str(folder), "img_scale": img_scale}
    result = stage(report, f"train.py {backbone}", "trainpy", args, 420)
    if result:
        seconds = result["seconds_per_iter"]
        report.add(f"train.py {backbone} batch {batch} crop {size}: s/iter over {start + 1}-{iters}",
                   f"{seconds:.3f} ({RECIPE_ITERS * seconds / 3600:.1f} h for {RECIPE_ITERS:,})",
                   "finite loss", bool(np.isfinite(result["loss"])))
        report.write()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "work_dirs" / "gpu_check")
    parser.add_argument("--reference", type=Path, help="CPU results written by an earlier run "
                        "(default: computed now, in --out)")
    parser.add_argument("--budget", type=int, default=600, help="seconds for the whole check (from a "
                        "cold cache its stages took 436 s on an H100, 90 s of them compiling Jittor's core)")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch comparison")
    parser.add_argument("--only", choices=("accuracy", "speed", "trainpy"),
                        help="run the start-up and this part alone (for a machine lent for less time)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = STAGES[args.child[0]](json.loads(args.child[1]))
        print("RESULT " + json.dumps(result), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, args.budget)
    print(report.host_line(), flush=True)
    reference = args.reference or args.out / "reference.npz"
    if args.reference is None:
        result = stage(report, "CPU reference", "reference", {"path": str(reference)}, 300,
                       env={"CUDA_VISIBLE_DEVICES": ""})
        if result:
            report.add("CPU reference (attention, norm, loss, both CCNets)", "finite" if result["finite"] else "not finite",
                       "finite", result["finite"])
    from jittor_setup.cuda import gpu_visible  # no Jittor start in this parent process
    if not gpu_visible():
        report.skipped.append("every GPU stage: no NVIDIA GPU is visible")
        report.write()
        print(f"no GPU: only the CPU half ran; {args.out / 'gpu_check.md'}")
        return
    result = stage(report, "startup", "startup", {}, 300)
    if result:
        report.add("start-up (Jittor on CUDA + cuDNN)", f"{report.raw['startup']['wall_s']:.0f} s",
                   "use_cuda=1, cuDNN loaded", bool(result["use_cuda"] and result["cudnn"]))
        if args.only in (None, "accuracy"):
            check_accuracy(report, reference)
        with_torch = not args.no_torch and torch_cuda()
        if not with_torch:
            report.skipped.append("PyTorch comparison (" + ("--no-torch" if args.no_torch else
                                                            "torch with CUDA not importable") + ")")
        for backbone in BACKBONES if args.only in (None, "speed") else ():
            check_backbone(report, backbone, with_torch)
        for backbone in BACKBONES if args.only in (None, "trainpy") else ():
            check_trainpy(report, backbone, args.out / f"trainpy_{backbone}")
    report.write()
    failed = [row for row in report.rows if row[3] is False]
    print(f"{len(report.rows)} checks, {len(failed)} missed, {time.perf_counter() - report.start:.0f} s; "
          f"{args.out / 'gpu_check.md'}")


if __name__ == "__main__":
    main()
