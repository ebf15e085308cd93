"""Checks on the processes a test started: which of them are still alive, waiting for a condition."""
import time
from pathlib import Path


def live_processes_in_group(group):
    """Pids of the processes (zombies aside) whose process group is `group`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def wait_for(condition, seconds, what):
    """Poll `condition` until it holds; fail after `seconds`, saying what (a string, or a function
    giving one then, e.g. with the output so far) did not happen."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what() if callable(what) else what} after {seconds} s"
        time.sleep(0.2)
