"""BIDS raw datasets as a cohort (`scans: {layout: bids}`, config/cohorts/bids.yaml).

Structural inputs: ``sub-<l>/[ses-<l>/]anat/sub-<l>[_ses-<l>][_<key>-<value>...]_<suffix>.nii[.gz]``
with suffix T1w (T1; with a ``ce-`` entity: T1c), T2w (T2) or FLAIR. Every other NIfTI in an
``anat`` folder (T1map, UNIT1, MP2RAGE, inplaneT2, defacemask, a ``part-phase`` image, ...) is
listed as skipped with its reason.

One scan per modality and session (the pipeline's unit): among the candidates the chosen one
is, in order, the first that matches an entry of the mapping's ``scans.prefer`` list (e.g.
``[acq-mprage, rec-norm]``), then the one with the fewest entities besides sub/ses/run/ce (the
plainest acquisition), then the lowest ``run-`` (so adding a later run never changes the
choice), then the file name. The others are listed as skipped, naming the chosen file.

JSON sidecars follow the BIDS inheritance principle: every ``*.json`` in the dataset root, the
subject, session and anat folders whose entities are a subset of the scan's and whose suffix
is the scan's applies, the deeper and more specific one overriding.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from braing3n.paths import BIDS_CE, BIDS_SUFFIX

# suffix -> modality of a plain (no ce-) input; a ce- T1w is the T1c (paths.BIDS_SUFFIX/BIDS_CE)
SUFFIX_MODALITY = {suffix: m for m, suffix in BIDS_SUFFIX.items() if m not in BIDS_CE}
CE_MODALITY = {BIDS_SUFFIX[m]: m for m in BIDS_CE}
LABEL = re.compile(r"^[A-Za-z0-9]+$")
PLAIN = {"sub", "ses", "run", "ce"}  # entities that do not make an acquisition "special"


@dataclass(frozen=True)
class BidsFile:
    path: str
    entities: dict[str, str]
    suffix: str
    extension: str


def parse_name(name: str) -> BidsFile | None:
    """Entities, suffix and extension of a BIDS file name; None when it is not one."""
    m = re.fullmatch(r"([^.]+)(\.[A-Za-z0-9.]+)", name)
    if not m:
        return None
    *parts, suffix = m.group(1).split("_")
    entities = {}
    for part in parts:
        key, sep, value = part.partition("-")
        if not sep or not LABEL.match(key) or not LABEL.match(value) or key in entities:
            return None
        entities[key] = value
    if not LABEL.match(suffix):
        return None
    return BidsFile(name, entities, suffix, m.group(2))


def _dirs(path: Path, prefix: str) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir() and e.name.startswith(prefix))
    except OSError:
        return []


def _nifti(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder)
                      if e.name.endswith((".nii", ".nii.gz")) and not e.name.startswith("."))
    except OSError:
        return []


def _rank(f: BidsFile, prefer: list[str]):
    pref = next((i for i, p in enumerate(prefer) if f.entities.get(p.partition("-")[0]) == p.partition("-")[2]),
                len(prefer))
    run = f.entities.get("run", "0")
    return pref, len(set(f.entities) - PLAIN), int(run) if run.isdigit() else 0, f.path


def anat_files(root: Path) -> list[tuple[str, str, Path]]:
    """(subject, session or '', anat folder) for every anat folder of the dataset."""
    out = []
    for sub in _dirs(root, "sub-"):
        for ses in _dirs(sub, "ses-"):
            out.append((sub.name[4:], ses.name[4:], ses / "anat"))
        out.append((sub.name[4:], "", sub / "anat"))
    return out


def discover(root: str | os.PathLike, prefer: list[str] | None = None,
             skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, str, str, str]]:
    """Chosen structural scans as (subject, session or '', modality, path); each other NIfTI of
    an anat folder is appended to ``skipped`` as (path, reason)."""
    prefer = [str(p) for p in prefer or []]
    skipped = skipped if skipped is not None else []
    groups: dict[tuple[str, str, str], list[BidsFile]] = {}
    for subject, session, anat in anat_files(Path(root)):
        for name in _nifti(anat):
            path = str(anat / name)
            f = parse_name(name)
            if f is None or f.entities.get("sub") != subject or f.entities.get("ses", "") != session:
                where = f"sub-{subject}" + (f"/ses-{session}" if session else "")
                skipped.append((path, f"not a BIDS file name of {where} (sub-/ses- entities must match the folders)"))
                continue
            modality = SUFFIX_MODALITY.get(f.suffix)
            if modality is None:
                skipped.append((path, f"suffix {f.suffix!r} is not a structural input (T1w, T2w, FLAIR)"))
                continue
            if f.entities.get("part", "mag") != "mag":
                skipped.append((path, f"part-{f.entities['part']} image: only magnitude images are inputs"))
                continue
            if "ce" in f.entities:
                if f.suffix not in CE_MODALITY:
                    skipped.append((path, f"contrast-enhanced {f.suffix} (ce-{f.entities['ce']}) is not a "
                                          "canonical modality (only a ce- T1w is: T1c)"))
                    continue
                modality = CE_MODALITY[f.suffix]
            groups.setdefault((subject, session, modality), []).append(BidsFile(path, f.entities, f.suffix,
                                                                                f.extension))
    chosen = []
    for (subject, session, modality), files in sorted(groups.items()):
        best, *rest = sorted(files, key=lambda f: _rank(f, prefer))
        for f in rest:
            skipped.append((f.path, f"another {modality} of this session was chosen ({Path(best.path).name}): one "
                                    "scan per modality and session (scans.prefer, then fewest entities, then "
                                    "lowest run, then name)"))
        chosen.append((subject, session, modality, best.path))
    return chosen


def sidecar(path: str | os.PathLike, root: str | os.PathLike) -> tuple[dict, list[str]]:
    """The scan's JSON metadata merged by the inheritance principle, and the files it came from
    (least specific first). A sidecar that is not valid JSON raises ValueError naming it."""
    path, root = Path(path), Path(root)
    scan = parse_name(path.name)
    if scan is None:
        return {}, []
    parts = path.relative_to(root).parts
    levels = [root] + [root.joinpath(*parts[:i]) for i in range(1, len(parts))]  # root .. the anat folder
    merged: dict = {}
    used: list[str] = []
    for folder in levels:
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".json"))
        except OSError:
            continue
        hits = []
        for name in names:
            f = parse_name(name)
            if f and f.suffix == scan.suffix and all(scan.entities.get(k) == v for k, v in f.entities.items()):
                hits.append((len(f.entities), name))
        for _, name in sorted(hits):
            file = folder / name
            try:
                data = json.loads(file.read_bytes().decode("utf-8-sig"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{file}: not a readable JSON sidecar ({exc})") from exc
            if isinstance(data, dict):
                merged.update(data)
                used.append(str(file))
    return merged, used
