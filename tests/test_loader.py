"""The batch loader's worker processes: failures reach the reader at once, nothing hangs or stays."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets import DatasetError, Loader, LoaderError

ROOT = Path(__file__).resolve().parents[1]


class Toy:
    """Draw d is (an image filled with d, a label filled with d); `fail` maps draws to what goes wrong."""

    def __init__(self, size=12, fail=None):
        self.size, self.fail = size, fail or {}

    def __len__(self):
        return self.size

    def __getitem__(self, draw):
        what = self.fail.get(draw)
        if what == "bad file":
            raise DatasetError(f"images/{draw}.jpg: unreadable image (truncated JPEG)")
        if what == "bug":
            raise ZeroDivisionError("a bug in a transform")
        if what == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if what == "hangs":
            time.sleep(3600)
        return np.full((3, 2, 2), draw, np.float32), np.full((2, 2), draw, np.int32)


@pytest.fixture(autouse=True)
def no_workers_left():
    """Every test ends with the child processes it began with (Jittor keeps a pool of its own)."""
    before = set(multiprocessing.active_children())
    yield
    assert set(multiprocessing.active_children()) <= before


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_come_in_draw_order_from_any_number_of_workers(workers):
    with Loader(Toy(), batch_size=4, start=2, stop=12, workers=workers) as loader:
        batches = list(loader)
    assert [images[:, 0, 0, 0].tolist() for images, _ in batches] == [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11]]
    assert [labels[:, 0, 0].tolist() for _, labels in batches] == [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11]]


def test_each_process_reads_its_slice_of_every_global_batch():
    slices = [[images[:, 0, 0, 0].tolist() for images, _ in Loader(Toy(), batch_size=4, stop=8, part=(rank, 2))]
              for rank in (0, 1)]
    assert slices == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]


def test_a_bad_sample_in_a_worker_raises_its_dataset_error_in_the_reader():
    started = time.monotonic()
    with pytest.raises(DatasetError, match=r"^images/5\.jpg: unreadable image \(truncated JPEG\)$"):
        with Loader(Toy(fail={5: "bad file"}), batch_size=2, workers=2) as loader:
            for _ in loader:
                pass
    assert time.monotonic() - started < 10


def test_a_bug_in_a_worker_raises_loader_error_with_its_traceback():
    with pytest.raises(LoaderError, match=r"(?s)data worker 1 failed:.*ZeroDivisionError: a bug in a transform"):
        with Loader(Toy(fail={3: "bug"}), batch_size=2, workers=2) as loader:
            list(loader)


def test_a_worker_that_dies_raises_loader_error_naming_it():
    with pytest.raises(LoaderError, match=r"data worker 0 \(pid \d+\) was killed by SIGKILL \(out of memory\?\) "
                                          r"while reading draws 4-5"):
        with Loader(Toy(fail={4: "killed"}), batch_size=2, workers=2) as loader:
            list(loader)


def test_a_worker_found_dead_when_asked_for_more_is_reported_when_its_batch_is_due():
    loader = Loader(Toy(), batch_size=2, workers=2)
    batches = iter(loader)
    next(batches)
    worker, _, results, _ = loader.workers[1]
    assert results.poll(10)
    time.sleep(0.5)  # it has answered all it was asked (batches 1 and 3) and waits for more
    worker.kill()
    worker.join()
    with pytest.raises(LoaderError, match=r"data worker 1 \(pid \d+\) was killed by SIGKILL"):
        list(batches)
    loader.close()


def test_until_ends_a_wait_on_a_hung_worker_and_close_ends_the_worker():
    stop_at = time.monotonic() + 1.0
    with Loader(Toy(fail={2: "hangs"}), batch_size=2, workers=1, until=lambda: time.monotonic() > stop_at) as loader:
        batches = list(loader)
    assert len(batches) == 1 and time.monotonic() - stop_at < 3  # the wait, then closing the hung worker


class Resizing(Toy):
    def __getitem__(self, draw):
        image = cv2.resize(np.full((1200, 1200, 3), draw, np.float32), (900, 900))  # large: OpenCV's threads
        return image[:2, :2], np.full((2, 2), draw, np.int32)


def test_workers_forked_while_opencv_threads_run_do_not_hang():
    big = np.zeros((2000, 2000, 3), np.float32)
    for _ in range(3):
        cv2.resize(big, (1500, 1500))  # this process's OpenCV thread pool is started
    threads = cv2.getNumThreads()
    deadline = time.monotonic() + 30
    with Loader(Resizing(), batch_size=2, workers=2, until=lambda: time.monotonic() > deadline) as loader:
        batches = list(loader)
    assert len(batches) == 6, "the workers hung in OpenCV"
    assert cv2.getNumThreads() == threads


READER = """
import os, sys, time
from datasets import Loader
from test_loader import Toy
loader = iter(Loader(Toy(size=10**6), batch_size=2, workers=2))
next(loader)
print(" ".join(str(p.pid) for p in __import__("multiprocessing").active_children()), flush=True)
time.sleep(3600)
"""


def test_workers_end_by_themselves_when_the_reader_is_killed():
    reader = subprocess.Popen([sys.executable, "-c", READER], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")),
                              stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in reader.stdout.readline().split()]
    assert len(pids) == 2
    reader.kill()
    reader.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
              for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert time.monotonic() < deadline, f"workers {pids} outlived their reader"
