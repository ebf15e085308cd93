"""bench/step_kernels.py's GPU mode: the GPU's busy time from kernel intervals and the host's time from
CUDA API calls (known answers), its summary line, and its refusal on a machine without a GPU (its
kernels are read on GPUs only)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from bench import step_kernels as kernels


@pytest.mark.parametrize("intervals, busy, span", [
    ([], 0.0, 0.0),
    ([(0.0, 1.0), (2.0, 3.0)], 2.0, 3.0),           # a gap: the GPU waited
    ([(0.0, 2.0), (1.0, 3.0)], 3.0, 3.0),           # overlapping (two streams)
    ([(1.0, 2.0), (0.0, 4.0), (3.0, 5.0)], 5.0, 5.0),  # one inside another, out of order
])
def test_busy_time_is_the_union_of_kernel_intervals(intervals, busy, span):
    assert kernels.busy_and_span(intervals) == (pytest.approx(busy), pytest.approx(span))


def test_host_time_from_cuda_api_calls():
    calls = [("cudaLaunchKernel", 5.0, 6.0),       # out of order: sorted by start
             ("cudaLaunchKernel", 0.0, 1.0),
             ("cudaMemcpyAsync", 0.5, 2.0),        # overlaps the first call (another thread)
             ("cudaDeviceSynchronize", 8.0, 10.0),
             ("cudaStreamSynchronize", 10.0, 10.5)]
    summary = kernels.host_summary(calls)
    assert summary == {"api_calls": 5, "api_s": pytest.approx(6.0), "api_waiting_s": pytest.approx(2.5),
                       "host_between_api_s": pytest.approx(3.0 + 2.0)}
    assert kernels.host_summary([]) == {"api_calls": 0, "api_s": 0, "api_waiting_s": 0, "host_between_api_s": 0.0}


def test_gpu_summary_line():
    summary = dict(kernels.host_summary([("cudaLaunchKernel", 0.0, 0.001), ("cudaDeviceSynchronize", 0.003, 0.004)]),
                   wall_s=0.25, python_build_s=0.05, kernels=10, gpu_busy_s=0.1, gpu_span_s=0.15)
    assert kernels.gpu_summary(summary) == (
        "step 250.0 ms (median of 5), of which Python graph building 50.0 ms; 10 kernels, GPU busy 100.0 ms "
        "over the profiled step's 150.0 ms; host: 2 CUDA API calls, 2.0 ms in them (1.0 ms waiting for the GPU), "
        "2.0 ms between them")


def test_gpu_mode_refuses_without_a_gpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_kernels.py"), "--gpu"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "--gpu: no NVIDIA GPU is visible here" in proc.stderr
