"""Two MPI processes train as one process with the same global batch.

Needs OpenMPI's mpirun (Debian: openmpi-bin libopenmpi-dev); the test is skipped, saying so, where
it is missing, unless CCNET_REQUIRE_MPI=1 (as in CI) makes that a failure.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from checkpoints import read_checkpoint

from datasets import synthetic

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = shutil.which("mpirun")
if MPIRUN is None and os.environ.get("CCNET_REQUIRE_MPI") == "1":
    raise RuntimeError("CCNET_REQUIRE_MPI=1 but mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found: install openmpi-bin and libopenmpi-dev")


def run_args(data_root, work_dir):
    """van_b0 (drop path, dropout, batch norm: all that a split batch could change), global batch 4.
    SGD, not AdamW: Adam turns the rounding noise of gradients that are zero in exact arithmetic
    (conv biases before a batch norm) into full-size steps of either sign."""
    return ["--backbone", "van_b0", "--data-root", data_root, "--work-dir", str(work_dir),
            "--crop-size", "64", "--batch-size", "4", "--workers", "0", "--iters", "3",
            "--eval-interval", "3", "--log-interval", "1", "--optimizer", "sgd", "--lr", "0.01"]


def log(work_dir):
    return [json.loads(line) for line in (Path(work_dir) / "log.jsonl").read_text().splitlines()]


def run_two_processes(script, *args):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    result = subprocess.run([MPIRUN, "-np", "2", sys.executable, str(ROOT / "tests" / script), *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_norm_in_two_processes_is_the_norm_of_their_whole_batch(tmp_path):
    """Batch statistics of the whole batch (synchronised batch norm): each process's output and input
    gradients are its half of one process's, and the weight gradients of the two add up to one's
    (the optimizer averages the processes' gradients of their own mean losses)."""
    run_two_processes("mpi_norm.py", str(tmp_path))
    subprocess.run([sys.executable, str(ROOT / "tests" / "mpi_norm.py"), str(tmp_path)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    one = np.load(tmp_path / "norm_single.npz")
    halves = [np.load(tmp_path / f"norm_rank{rank}.npz") for rank in (0, 1)]
    for name in ("y", "dx", "dresidual"):
        np.testing.assert_allclose(np.concatenate([h[name] for h in halves]), one[name], rtol=1e-5,
                                   atol=1e-5 * np.abs(one[name]).max(), err_msg=name)
    for name in ("dweight", "dbias"):
        np.testing.assert_allclose(halves[0][name] + halves[1][name], one[name], rtol=1e-5, atol=1e-5, err_msg=name)
    for half in halves:
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(half[name], one[name], rtol=1e-6, err_msg=name)


def test_two_processes_match_one(tmp_path):
    data_root = str(tmp_path / "data")
    synthetic.write_ade20k(data_root, train=8, val=3, size=96)
    distributed = tmp_path / "two"
    run_two_processes("mpi_train.py", *run_args(data_root, distributed))
    single = tmp_path / "one"
    assert train.main(run_args(data_root, single)) == 0

    rank0, rank1 = (np.load(distributed / f"rank{r}.npz") for r in (0, 1))
    one = read_checkpoint(str(single / "latest.safetensors"))["model"]
    two = read_checkpoint(str(distributed / "latest.safetensors"))["model"]
    assert sorted(rank0.files) == sorted(rank1.files) == sorted(one)
    worst = 0.0
    for name in one:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)  # identical in every process
        np.testing.assert_array_equal(rank0[name], two[name], err_msg=name)  # and that is what was saved
        scale = max(np.abs(one[name]).max(), 1e-3)
        worst = max(worst, np.abs(two[name] - one[name]).max() / scale)
    # Only the order of float32 sums differs (per-process sums, then the sum of those). Measured
    # after 3 steps: 1.7e-5 of a tensor's largest value, losses 2e-6.
    assert worst < 1e-3, worst
    one_log, two_log = log(single), log(distributed)
    assert [r["iter"] for r in one_log] == [r["iter"] for r in two_log]  # one log, from process 0
    for a, b in zip(one_log, two_log):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=2e-5)
        else:  # the evaluation, each process scoring half the images, summed
            assert b["eval"]["aAcc"] == pytest.approx(a["eval"]["aAcc"], abs=1e-4)
    assert (distributed / "curves.png").is_file()
