"""bench/kernels.py's GPU mode: the GPU's busy time from kernel intervals (known answers) and its
refusal on a machine without a GPU (its kernels are read on GPUs only)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import kernels  # noqa: E402


@pytest.mark.parametrize("intervals, busy, span", [
    ([], 0.0, 0.0),
    ([(0.0, 1.0), (2.0, 3.0)], 2.0, 3.0),           # a gap: the GPU waited
    ([(0.0, 2.0), (1.0, 3.0)], 3.0, 3.0),           # overlapping (two streams)
    ([(1.0, 2.0), (0.0, 4.0), (3.0, 5.0)], 5.0, 5.0),  # one inside another, out of order
])
def test_busy_time_is_the_union_of_kernel_intervals(intervals, busy, span):
    assert kernels.busy_and_span(intervals) == (pytest.approx(busy), pytest.approx(span))


def test_gpu_mode_refuses_without_a_gpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py"), "--gpu"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "--gpu: no NVIDIA GPU is visible here" in proc.stderr
