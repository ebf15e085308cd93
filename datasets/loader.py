"""Batches of a dataset's draws, read ahead by worker processes that may fail, die or be stopped.

    loader = Loader(dataset, batch_size=16, start=0, stop=16 * iters, workers=2)
    for images, labels in loader:   # NumPy arrays, batch first
        ...
    loader.close()

Batch b holds draws start + b * batch_size onwards and is read by worker b % workers, so batches
come back in order whatever the number of workers. With `part=(rank, world_size)` (several training
processes) a process reads its contiguous slice of every batch: batch_size is the global batch. The reader never blocks for long: it polls for
the next batch, so that signal handlers run, `until()` (when given) can end the pass early, and a
worker's end is noticed at once. A sample that raises DatasetError in a worker raises the same
DatasetError here (one line, naming the file); any other exception or a worker that dies raises
LoaderError with what is known. Workers ignore SIGINT (the reader stops them) and exit by
themselves when the reader's process is gone.
"""
import multiprocessing
import os
import signal
import traceback

import cv2
import numpy as np

from .ade20k import DatasetError

POLL_SECONDS = 0.1  # how often the waiting reader looks at signals, until() and worker health
ORPHAN_SECONDS = 1.0  # how often an idle worker checks that the reader still exists


class LoaderError(RuntimeError):
    """A data worker failed for another reason than a bad sample, or ended without an answer."""


def collate(samples):
    """[(image, label), ...] -> (images, labels) stacked along a new first axis."""
    return tuple(np.stack(field) for field in zip(*samples))


def read_batch(dataset, draws):
    return collate([dataset[draw] for draw in draws])


def work(dataset, tasks, results, reader_pid, others):
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
        index, draws = task
        try:
            answer = ("batch", index, read_batch(dataset, draws))
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
        self.workers = []  # (process, task sender, result receiver)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        if not self.num_workers:
            for draws in self.batches:
                if self.until and self.until():
                    return
                yield read_batch(self.dataset, draws)
            return
        self.start_workers()
        ahead = min(len(self.batches), self.prefetch * self.num_workers)
        for index in range(ahead):
            self.ask(index)
        for index in range(len(self.batches)):
            batch = self.receive(index)
            if batch is None:
                return
            if index + ahead < len(self.batches):
                self.ask(index + ahead)
            yield batch

    def start_workers(self):
        self.close()
        # Jittor's SIGCHLD handler ends the whole process when a child is killed; here a dead worker
        # is an error the caller sees (and can save before exiting on).
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        context = multiprocessing.get_context("fork")
        pipes = [(context.Pipe(duplex=False), context.Pipe(duplex=False)) for _ in range(self.num_workers)]
        every = [end for pair in pipes for pipe in pair for end in pipe]
        # OpenCV's thread pool does not survive a fork: a worker forked while it runs waits forever
        # for threads it does not have. Stopped here, the workers inherit none (they are the
        # parallelism) and this process gets its threads back after the fork.
        threads = cv2.getNumThreads()
        cv2.setNumThreads(0)
        try:
            for (task_receiver, task_sender), (result_receiver, result_sender) in pipes:
                others = [end for end in every if end not in (task_receiver, result_sender)]
                process = context.Process(target=work, daemon=True, args=(
                    self.dataset, task_receiver, result_sender, os.getpid(), others))
                process.start()
                task_receiver.close()
                result_sender.close()
                self.workers.append((process, task_sender, result_receiver))
        finally:
            cv2.setNumThreads(threads)

    def ask(self, index):
        try:
            self.workers[index % self.num_workers][1].send((index, self.batches[index]))
        except OSError:  # the worker is gone: receive() says so, naming it
            pass

    def receive(self, index):
        """Batch `index`, or None when until() says stop. Raises on any failure of its worker."""
        process, _, results = self.workers[index % self.num_workers]
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
        return payload

    def close(self):
        """Stop the workers and wait for them (at most about a second each)."""
        for process, tasks, results in self.workers:
            try:
                tasks.send(None)
            except OSError:
                pass
            tasks.close()
            results.close()
        for process, _, _ in self.workers:
            process.join(ORPHAN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
