"""Harmonise one cohort: discovered scans + clinical tables -> canonical rows (one per scan).

Steps: discover scan files (a file that does not exist or a duplicate scan_id is dropped and
listed), join the mapping's clinical tables, build every clinical field, null conflicting sex
across a subject's sessions, assign per-subject splits, validate against the schema.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from braing3n.metadata import discover
from braing3n.metadata.discover import discover_scans, is_bids
from braing3n.metadata.fields import build_fields
from braing3n.metadata.issues import HarmoniseError, IssueLog
from braing3n.metadata.mapping import join_tables, load_cohort_mapping
from braing3n.metadata.schema import CLINICAL, COLUMNS, to_arrow, validate
from braing3n.metadata.splits import assign_splits, baseline_diagnosis
from braing3n.provenance import write_parquet


@dataclass(frozen=True)
class Settings:
    strict: bool = False
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15


def scans_frame(cohort: str, mapping: dict, root: str | os.PathLike, log: IssueLog) -> pd.DataFrame:
    """One row per discovered scan file; missing files and duplicate scan_ids are dropped and logged."""
    duplicates: list = []
    skipped: list[tuple[str, str]] = []
    refs = discover_scans(cohort, mapping, root, duplicates=duplicates, skipped=skipped)
    for path, reason in skipped:  # BIDS: other runs/acquisitions, T1map, MP2RAGE, ... (not bad input)
        log.add("skipped_scan", "dropped", file=path, detail=reason)
    for kept, extra in duplicates:
        if kept.subject_raw != extra.subject_raw:
            log.add("subject_label_clash", "dropped", file=extra.path, value=extra.subject_raw, scan_id=extra.scan_id,
                    detail=f"subject {extra.subject_raw!r} gives the label {extra.subject} of {kept.subject_raw!r} "
                           f"({kept.path}); the first spelling is kept, rename one")
            continue
        log.add("duplicate_scan_id", "dropped", file=extra.path, value=kept.scan_id, scan_id=kept.scan_id,
                detail=f"same scan_id as {kept.path}; the first file is kept")
    rows = []
    for r in refs:
        if not os.path.isfile(r.path):  # e.g. a broken symlink into an unmounted share
            log.add("missing_scan_file", "dropped", file=r.path, value=r.scan_id, scan_id=r.scan_id,
                    detail="scan file does not exist")
            continue
        rows.append({"cohort": cohort, "subject_id": r.subject_id, "session_id": r.session_raw,
                     "scan_id": r.scan_id, "subject_label": r.subject, "session_label": r.session,
                     "modality": r.modality, "raw_path": r.path, "subject_raw": r.subject_raw,
                     "session_raw": r.session_raw})
    return pd.DataFrame(rows, columns=["cohort", "subject_id", "session_id", "scan_id", "subject_label",
                                       "session_label", "modality", "raw_path", "subject_raw", "session_raw"])


def add_sidecars(wide: pd.DataFrame, root: Path, log: IssueLog) -> pd.DataFrame:
    """BIDS: each scan's merged JSON sidecar as ``sidecar.<Key>`` columns (scalars only), with
    ``sidecar.__file`` (the most specific JSON) so fields name it as their source."""
    from braing3n.metadata.bids import sidecar

    rows = []
    for i, path in zip(wide.index, wide["raw_path"], strict=True):
        try:
            data, files = sidecar(path, root)
        except ValueError as exc:
            log.add("bad_sidecar", "nulled", file=str(exc).split(": ", 1)[0], scan_id=wide.at[i, "scan_id"],
                    detail=str(exc).split(": ", 1)[-1])
            data, files = {}, []
        row = {f"sidecar.{k}": _scalar(v) for k, v in data.items() if _scalar(v) is not None}
        if files:
            row["sidecar.__file"] = Path(files[-1]).relative_to(root).as_posix()
        rows.append(row)
    side = pd.DataFrame(rows, index=wide.index)
    if "sidecar.__file" not in side.columns:
        side["sidecar.__file"] = None
    side["sidecar.__row"] = float("nan")
    return pd.concat([wide, side.astype(object).where(side.notna(), None)], axis=1)


def _scalar(value) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return None
    text = str(value).strip()
    return text if text and text.lower() != "n/a" else None


def _sex_conflicts(df: pd.DataFrame, log: IssueLog) -> None:
    known = df.dropna(subset=["sex"])
    n_sex = known.groupby("subject_id")["sex"].nunique()
    conflicted = set(n_sex.index[n_sex > 1])
    for sid, group in known[known["subject_id"].isin(conflicted)].groupby("subject_id", sort=True):
        values = sorted(group["sex"].unique())
        pairs = sorted(set(zip(group["session_id"], group["sex"], strict=True)))
        by_session = "; ".join(f"{s}={x}" for s, x in pairs)
        files = sorted(set(group["source_file"].dropna()))
        log.add("sex_conflict", "nulled", file=";".join(files), column="sex", value="/".join(values),
                scan_id=group["scan_id"].iloc[0], detail=f"subject {sid} sessions {by_session}; sex nulled")
    df.loc[df["subject_id"].isin(conflicted), "sex"] = None


def harmonise_cohort(cohort: str, mapping_path: str, root: str | os.PathLike,
                     settings: Settings = Settings()) -> tuple[pd.DataFrame, IssueLog]:
    """Canonical rows for one cohort and its issues log (raises HarmoniseError in strict mode)."""
    mapping_path = discover.mapping_path(mapping_path)
    mapping = load_cohort_mapping(mapping_path)
    log = IssueLog(cohort, strict=settings.strict)
    root = Path(root)
    if not root.is_dir():
        raise HarmoniseError(f"{root}: raw root of cohort {cohort} is not a folder")
    scans = scans_frame(cohort, mapping, root, log)
    if scans.empty:
        skipped = len(log.frame().query("problem == 'skipped_scan'"))
        raise HarmoniseError(f"{root}: no scans of cohort {cohort} match the pattern in {mapping_path}"
                             + (f" ({skipped} anat files skipped: none is a T1w, T2w or FLAIR)" if skipped else ""))
    wide, _ = join_tables(scans, mapping, root, log)
    if is_bids(mapping):
        wide = add_sidecars(wide, root, log)
    fields, sources = build_fields(wide, mapping, log, str(mapping_path))
    df = scans.drop(columns=["subject_raw", "session_raw"]).copy()
    for name in CLINICAL:
        df[name] = fields[name] if name in fields else None
    if "days_from_baseline" not in (mapping.get("fields") or {}):
        # Cross-sectional cohorts: a subject's only session is its baseline.
        n_sessions = df.groupby("subject_id")["session_id"].transform("nunique")
        df["days_from_baseline"] = [0.0 if n == 1 else None for n in n_sessions]
    df["source_file"] = [";".join(sources[i]) or None for i in wide.index]
    df["source_row"] = [";".join(sources[i].values()) or None for i in wide.index]
    _sex_conflicts(df, log)
    subjects = baseline_diagnosis(df)
    splits = assign_splits(subjects, settings.seed, settings.val_fraction, settings.test_fraction)
    df["split"] = df["subject_id"].map(splits)
    df = df[COLUMNS].sort_values("scan_id", kind="stable").reset_index(drop=True)
    return validate(df, source=f"{cohort} ({mapping_path})"), log


def write_partition(df: pd.DataFrame, path: str | os.PathLike, prov: dict | None = None) -> None:
    """Atomic Parquet write (tmp + rename) so a failed run leaves no partial partition."""
    write_parquet(to_arrow(df), path, prov or {})


def read_partitions(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate partitions, each validated; a scan_id in two partitions is an error."""
    frames = [validate(pq.read_table(p).to_pandas(), source=str(p)) for p in paths]
    if not frames:
        raise HarmoniseError("no metadata partitions given")
    df = pd.concat(frames, ignore_index=True)
    dup = df["scan_id"][df["scan_id"].duplicated()]
    if len(dup):
        raise HarmoniseError(f"scan_id {dup.iloc[0]!r} is in more than one partition ({len(dup)} duplicates)")
    return validate(df.sort_values("scan_id", kind="stable"), source="manifest")
