"""Batches of a dataset's draws, read ahead by worker processes that may fail, die or be stopped.

    loader = Loader(dataset, batch_size=16, start=0, stop=16 * iters, workers=2)
    for images, labels in loader:   # NumPy arrays, batch first
        ...
    loader.close()

Batch b holds draws start + b * batch_size onwards. With workers, the reader reads batch 0 itself
(its size sets the shared memory) and batch b >= 1 comes from worker b % workers, so batches come
back in order whatever the number of workers. With `part=(rank, world_size)` (several training
processes) a process reads its contiguous slice of every batch: batch_size is the global batch.

Batches travel through shared memory: each worker has `prefetch` slots of the first batch's size,
mapped before the fork, and sends only where it put the arrays (a larger batch goes through its
pipe, pickled; a pipe alone moves a 25 MB batch 3x slower here). The reader never blocks for long:
it polls for the next batch, so signal handlers run, `until()` (when given) can end the pass
early, and a worker's end is noticed at once. A sample that raises DatasetError in a worker raises
the same DatasetError here (one line, naming the file); any other exception or a worker that dies
raises LoaderError with what is known. Workers ignore SIGINT (the reader stops them) and exit by
themselves when the reader's process is gone.
"""
import mmap
import multiprocessing
import os
import signal
import traceback

import cv2
import numpy as np

from .segmentation import DatasetError

POLL_SECONDS = 0.1  # how often the waiting reader looks at signals, until() and worker health
ORPHAN_SECONDS = 1.0  # how often an idle worker checks that the reader still exists
ALIGN = 64  # bytes: where each array of a batch starts in a shared slot


class LoaderError(RuntimeError):
    """A data worker failed for another reason than a bad sample, or ended without an answer."""


def collate(samples):
    """[(image, label), ...] -> (images, labels) stacked along a new first axis."""
    return tuple(np.stack(field) for field in zip(*samples))


def read_batch(dataset, draws):
    return collate([dataset[draw] for draw in draws])


def aligned(nbytes):
    return -(-nbytes // ALIGN) * ALIGN


def slot_bytes(batch):
    return sum(aligned(array.nbytes) for array in batch)


def place(batch, slot):
    """Copy the batch's arrays into the shared `slot`: their (shape, dtype, offset), or None when
    they do not fit."""
    if slot_bytes(batch) > len(slot):
        return None
    layout, offset = [], 0
    for array in batch:
        np.ndarray(array.shape, array.dtype, buffer=slot, offset=offset)[...] = array
        layout.append((array.shape, array.dtype.str, offset))
        offset += aligned(array.nbytes)
    return layout


def take(layout, slot):
    """Copies of the arrays `place` put in `slot` (the worker reuses it for a later batch)."""
    return tuple(np.ndarray(shape, dtype, buffer=slot, offset=offset).copy() for shape, dtype, offset in layout)


def work(dataset, tasks, results, reader_pid, others, slots):
    """A worker: read the batches asked for on `tasks`, answer each on `results`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the reader decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for connection in others:  # so that a dead reader or worker closes its pipes for everyone
        connection.close()
    while True:
        if not tasks.poll(ORPHAN_SECONDS):
            if os.getppid() != reader_pid:
                return
            continue
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        index, draws, slot = task
        try:
            batch = read_batch(dataset, draws)
            layout = place(batch, slots[slot])
            answer = ("batch", index, batch) if layout is None else ("shared", index, layout)
        except DatasetError as error:
            answer = ("dataset", index, str(error))
        except Exception:
            answer = ("error", index, traceback.format_exc())
        try:
            results.send(answer)
        except (BrokenPipeError, EOFError):
            return


def describe_exit(code):
    if code is None:
        return "closed its pipe while still running"
    if code < 0:
        name = signal.Signals(-code).name
        return f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exited with code {code}"


class Loader:
    def __init__(self, dataset, batch_size, start=0, stop=None, workers=0, prefetch=2, until=None, part=(0, 1)):
        stop = len(dataset) if stop is None else stop
        rank, world_size = part
        if batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} does not split over {world_size} processes")
        local = batch_size // world_size
        self.dataset, self.until = dataset, until
        self.batches = [range(first + rank * local, min(first + (rank + 1) * local, stop))
                        for first in range(start, stop, batch_size)]
        self.num_workers, self.prefetch = workers, prefetch
        self.workers = []  # (process, task sender, result receiver, shared slots)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        if not self.batches or (self.until and self.until()):
            return
        first = read_batch(self.dataset, self.batches[0])
        if self.num_workers:
            self.start_workers(slot_bytes(first))
            ahead = min(len(self.batches) - 1, self.prefetch * self.num_workers)
            for index in range(1, 1 + ahead):
                self.ask(index)
        yield first
        for index in range(1, len(self.batches)):
            if not self.num_workers:
                if self.until and self.until():
                    return
                yield read_batch(self.dataset, self.batches[index])
                continue
            batch = self.receive(index)
            if batch is None:
                return
            if index + ahead < len(self.batches):
                self.ask(index + ahead)
            yield batch

    def start_workers(self, size):
        self.close()
        context = multiprocessing.get_context("fork")
        pipes = [(context.Pipe(duplex=False), context.Pipe(duplex=False)) for _ in range(self.num_workers)]
        every = [end for pair in pipes for pipe in pair for end in pipe]
        # OpenCV's thread pool does not survive a fork: a worker that uses it (or so much as resizes
        # it) waits forever for threads it does not have. With the count at 0 while forking, the
        # workers run OpenCV on their own thread (they are the parallelism) and never touch the
        # pool; this process gets its count back after the fork.
        threads = cv2.getNumThreads()
        cv2.setNumThreads(0)
        try:
            for (task_receiver, task_sender), (result_receiver, result_sender) in pipes:
                others = [end for end in every if end not in (task_receiver, result_sender)]
                slots = [mmap.mmap(-1, size) for _ in range(self.prefetch)]  # shared with the fork
                process = context.Process(target=work, daemon=True, args=(
                    self.dataset, task_receiver, result_sender, os.getpid(), others, slots))
                process.start()
                task_receiver.close()
                result_sender.close()
                self.workers.append((process, task_sender, result_receiver, slots))
        finally:
            cv2.setNumThreads(threads)

    def slot(self, index):
        """The slot of its worker that batch `index` goes through: a worker has at most `prefetch`
        batches asked at a time, and batch index + prefetch * workers is asked only once batch
        `index` is taken out."""
        return (index // self.num_workers) % self.prefetch

    def ask(self, index):
        try:
            self.workers[index % self.num_workers][1].send((index, self.batches[index], self.slot(index)))
        except OSError:  # the worker is gone: receive() says so, naming it
            pass

    def receive(self, index):
        """Batch `index`, or None when until() says stop. Raises on any failure of its worker."""
        process, _, results, slots = self.workers[index % self.num_workers]
        while not results.poll(POLL_SECONDS):
            if self.until and self.until():
                return None
        try:
            kind, answered, payload = results.recv()
        except (EOFError, OSError):
            if self.until and self.until():  # a signal to the whole group ended the worker too
                return None
            process.join(ORPHAN_SECONDS)
            draws = self.batches[index]
            raise LoaderError(f"data worker {index % self.num_workers} (pid {process.pid}) "
                              f"{describe_exit(process.exitcode)} while reading draws "
                              f"{draws.start}-{draws.stop - 1}") from None
        assert answered == index, (answered, index)
        if kind == "dataset":
            raise DatasetError(payload)
        if kind == "error":
            raise LoaderError(f"data worker {index % self.num_workers} failed:\n{payload.rstrip()}")
        return take(payload, slots[self.slot(index)]) if kind == "shared" else payload

    def close(self):
        """Stop the workers and wait for them (at most about a second each)."""
        for process, tasks, results, _ in self.workers:
            try:
                tasks.send(None)
            except OSError:
                pass
            tasks.close()
            results.close()
        for process, _, _, slots in self.workers:
            process.join(ORPHAN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            for slot in slots:
                slot.close()
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
