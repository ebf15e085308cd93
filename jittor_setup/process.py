"""The process around Jittor: memory it frees kept for its next step, children and crashes handled
as the rest of the project expects, and an exit that cannot hang. `jittor_env` calls `keep_freed_memory`
before Jittor starts and `after_start` once it has.
"""
import atexit
import ctypes
import faulthandler
import os
import signal


def keep_freed_memory():
    """Keep memory the process frees for its next allocation instead of giving it back to the OS.

    Large blocks freed to the C library are unmapped or trimmed from the heap, and every train step
    then faults its buffers in again: tens of thousands of page faults and a tenth of a second or
    more of system time per CCNet-R101 step (docs/environment.md has the measurements). glibc's mallopt: blocks
    of any size come from the heap (M_MMAP_THRESHOLD) and the heap is never trimmed
    (M_TRIM_THRESHOLD). A user's own setting of either (MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES), or a C library without mallopt, leaves the defaults."""
    if ({"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold, largest = -1, -3, 2**31 - 1
    mallopt(m_mmap_threshold, largest)
    mallopt(m_trim_threshold, largest)


def after_start():
    """What Jittor's import changed about the process, put right."""
    # Jittor's SIGCHLD handler ends the whole process when any child is killed by a signal; the data
    # workers, Jittor's compiler pool at exit and the tests' processes are ended on purpose, and the
    # code that started each of them reports a death it did not ask for.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    end_on_crash()
    replace_pool_cleanup()


def end_on_crash():
    """Make a crash end the process at once, with Python's traceback of every thread.

    Jittor's handler for SIGSEGV and the like attaches gdb to the process and then calls exit()
    from inside the handler (neither is safe there): a crashed test run hung in it until the
    batch system's time limit instead of failing."""
    if faulthandler.is_enabled():  # enabled before Jittor replaced its handlers (-X faulthandler)
        faulthandler.disable()
    for fatal in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        signal.signal(fatal, signal.SIG_DFL)
    try:
        faulthandler.enable()
    except (AttributeError, OSError, RuntimeError, ValueError):  # a stderr without a file (None, notebook)
        pass


def end_compiler_pool():
    """Kill and reap the processes of Jittor's compiler pool (created on the first kernel compile).

    Pool.terminate, which Jittor and multiprocessing call at exit, first takes a lock that an idle
    pool process holds while it waits for work; if that process was killed, by a signal meant for
    the whole process group, the lock is never released and the exit hangs. Closing the pool stops
    it from replacing dead processes; the rest are killed here."""
    import jittor_utils
    pool = getattr(jittor_utils, "p", None)
    if pool is None:
        return
    pool.close()
    pool._worker_handler.join(timeout=1)  # it replaces dead processes until it sees the pool closed
    for process in pool._pool:
        process.kill()
        process.join()
    pool._terminate.cancel()  # the Pool.terminate that multiprocessing's own exit handler would call
    del jittor_utils.p


def replace_pool_cleanup():
    """Make Jittor's exit handler for its compiler pool end_compiler_pool, whether the pool exists
    (created while Jittor compiled its core) or comes later (Jittor registers the name it finds)."""
    import jittor_utils
    if getattr(jittor_utils, "p", None) is not None:
        atexit.unregister(jittor_utils.pool_cleanup)
        atexit.register(end_compiler_pool)
    jittor_utils.pool_cleanup = end_compiler_pool

