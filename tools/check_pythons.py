"""Check the project on every CPython this machine has, the way a new user starts it.

    make check-pythons                                    # the system's Pythons and pyenv's
    make check-pythons PYTHONS="/opt/py/bin/python3.12 ~/.local/bin/python3.13"

For each interpreter, in a scratch folder of its own with an empty Jittor cache: the README's start
(`make venv` and `make warm` with PYTHON and VENV pointing there: a fresh virtual environment, the
pinned requirements, Jittor's first start), then a smoke test in that environment: a generated
ADE20K-layout dataset, two training iterations of train.py (a model's forward and backward passes,
a checkpoint) and test.py on the checkpoint. Versions outside the supported range are only asked
to start, which must stop in one line. Prints a table (version, where it came from, install and
start-up time, result) and writes it to SCRATCH/pythons.md.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from jittor_setup.python import SUPPORTED


def pyenv_root():
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/.pyenv")


def found_pythons(given):
    """{real path: path} of the interpreters to check: those given, else the system's and pyenv's."""
    if given:
        candidates = [os.path.expanduser(p) for p in given]
    else:
        candidates = sorted(glob.glob("/usr/bin/python3.[0-9]*") + glob.glob("/usr/local/bin/python3.[0-9]*"))
        candidates = [p for p in candidates if p.rsplit("python", 1)[1].replace(".", "").isdigit()]
        candidates += sorted(glob.glob(os.path.join(pyenv_root(), "versions", "*", "bin", "python")))
    pythons = {}
    for path in candidates:
        if os.access(path, os.X_OK):
            pythons.setdefault(os.path.realpath(path), path)
    return pythons


def version_of(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=60)
    return tuple(int(x) for x in out.stdout.split(".")) if out.returncode == 0 else None


def origin(path):
    real = os.path.realpath(path)
    if real.startswith(os.path.realpath(pyenv_root())):
        return "pyenv"
    if real.startswith(("/usr/bin/", "/usr/local/bin/")):
        return "system"
    for name in ("conda", "uv", "homebrew"):
        if name in real:
            return name
    return "given"


def run(step, log, command, env, timeout):
    """Run one step, appending its output to `log`; (ok, seconds)."""
    start = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, command))}\n")
        f.flush()
        try:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write(f"{step}: timed out after {timeout} s\n")
            code = None
    return code == 0, time.time() - start


def check(path, version, scratch):
    """One row of the table."""
    name = f"python{'.'.join(map(str, version))}-{origin(path)}"
    folder = scratch / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    # HOME too: Jittor writes a JITTOR_HOME it is given into ~/.cache/jittor/config.json, where it
    # would become the default of every later run (pip keeps the user's cache of built wheels)
    env = {**os.environ, "JITTOR_HOME": str(folder / "home"), "HOME": str(folder / "home"),
           "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", os.path.expanduser("~/.cache/pip"))}
    env.pop("python_config_path", None)
    row = {"version": ".".join(map(str, version)), "origin": origin(path), "path": path, "log": str(log)}
    if not SUPPORTED[0] <= version[:2] <= SUPPORTED[1]:
        stop = subprocess.run([path, str(ROOT / "jittor_setup" / "python.py")], capture_output=True, text=True, cwd=ROOT)
        lines = (stop.stdout + stop.stderr).strip().splitlines()
        refused = stop.returncode != 0 and len(lines) == 1 and "is not supported" in lines[0]
        row["result"] = "refused in one line, as it should be" if refused else f"NOT refused cleanly: {lines[-3:]}"
        row["ok"] = refused
        return row
    venv = folder / "venv"
    make = ["make", "--no-print-directory", f"PYTHON={path}", f"VENV={venv}"]
    ok, row["install_s"] = run("install", log, make + ["venv"], env, 3600)
    if ok:
        ok, row["start_s"] = run("start", log, make + ["warm"], env, 1800)
    python, data, work = venv / "bin" / "python", folder / "data", folder / "work"
    steps = [("data", [python, "tools/make_synthetic_ade20k.py", "--out", data, "--train", "4", "--val", "2",
                       "--size", "64"]),
             ("train", [python, "train.py", "--backbone", "van_b0", "--data-root", data, "--work-dir", work,
                        "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--iters", "2",
                        "--eval-interval", "0"]),
             ("test", [python, "test.py", "--ckpt", work / "latest.safetensors", "--out", work / "test"])]
    failed = None if ok else ("install" if "start_s" not in row else "start")
    for step, command in steps:
        if failed:
            break
        ok, seconds = run(step, log, command, env, 1800)
        row[f"{step}_s"] = seconds
        if not ok or (step == "test" and not (work / "test" / "metrics.json").is_file()):
            failed = step
    row["ok"] = failed is None
    row["result"] = "smoke test passed" if failed is None else f"FAILED at {failed} (see {log})"
    return row


def table(rows):
    def seconds(row, key):
        return f"{row[key]:.0f} s" if key in row else "-"
    lines = [f"Checked {date.today().isoformat()} with `make check-pythons` on {os.uname().machine}, "
             f"{os.cpu_count()} cores; each Python in a fresh venv with an empty Jittor cache.", "",
             "| Python | from | install | first start (Jittor compiles) | train 2 it + test | result |",
             "|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: tuple(int(x) for x in r["version"].split("."))):
        smoke = (f"{row['train_s'] + row['test_s']:.0f} s" if "test_s" in row else "-")
        lines.append(f"| {row['version']} | {row['origin']} (`{row['path']}`) | {seconds(row, 'install_s')} | "
                     f"{seconds(row, 'start_s')} | {smoke} | {row['result']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pythons", nargs="*", help="interpreters to check (default: the system's and pyenv's)")
    p.add_argument("--scratch", help="folder for the venvs, caches and logs (default: a new temporary one)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="Pythons checked at once (default: half the cores; each first start compiles on all)")
    args = p.parse_args(argv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ccnet-pythons-")).resolve()
    pythons = []
    for path in found_pythons(args.pythons).values():
        version = version_of(path)
        if version is None:
            print(f"{path}: does not run; skipped", file=sys.stderr)
        elif version[0] == 3:
            pythons.append((path, version))
    if not pythons:
        sys.exit("no Python 3 found to check; pass interpreters as arguments or PYTHONS=...")
    print(f"checking {len(pythons)} Pythons, {args.jobs} at a time, in {scratch}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda pv: check(*pv, scratch), pythons))
    text = table(rows)
    (scratch / "pythons.md").write_text(text + "\n")
    print(text)
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
