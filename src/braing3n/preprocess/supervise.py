"""Run a preprocessing job in a forked child so SIGTERM ends it at once, with its files cleaned up.

SLURM sends SIGTERM at the time limit or on preemption and SIGKILL after KillWait (30 s by
default). Python runs a signal handler only between bytecodes, and ANTsPy holds the GIL inside
its C++ calls: measured, a 44 s `ants.registration` let a second Python thread run 12 times, so
neither a handler nor a watcher thread can act before the call returns (the issue saw 60 s). The
parent process here only waits: on SIGTERM it SIGKILLs the child, removes what the job had written
(temp folders, records, products) and exits 128 + 15. A child killed from outside (the kernel's
OOM killer) gets the same clean-up and a one-line reason.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)


class Terminated(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def _child(work: Callable[[], int]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SLURM signals the whole step: die at once
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    try:
        code = int(work())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never return into the parent's stack (a test runner's, for one)


def run_supervised(work: Callable[[], int], cleanup: Callable[[], None], what: str) -> int:
    """``work()`` in a forked child; its exit code, or 128 + signal after ``cleanup()``."""
    sys.stdout.flush()
    sys.stderr.flush()
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGINT)}
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:
            _child(work)
        _, status = os.waitpid(pid, 0)
        pid = -1
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            cleanup()
            hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == signal.SIGKILL else ""
            print(f"braing3n preprocess: {what}: killed by {signal.Signals(sig).name}{hint}; "
                  "its partial files were removed", file=sys.stderr)
            return 128 + sig
        return os.WEXITSTATUS(status)
    except Terminated as exc:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        cleanup()
        print(f"braing3n preprocess: {what}: stopped by {signal.Signals(exc.signum).name}; "
              "its partial files were removed", file=sys.stderr)
        return 128 + exc.signum
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
