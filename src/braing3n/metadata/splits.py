"""Per-subject train/val/test splits: deterministic from the seed, stratified, stable across cohorts.

Each subject gets a key u = sha256(seed, subject_id) in [0, 1). Within one stratum
(cohort x baseline diagnosis) subjects are ranked by u and the first round(n*f_test) go to
test, the next round(n*f_val) to val, the rest to train. A subject's split depends only on
the subjects of its own cohort and diagnosis, so adding another cohort never moves anyone;
all sessions and modalities of a subject share its split.
"""

from __future__ import annotations

import hashlib

import pandas as pd


def subject_key(seed: int, subject_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stratum_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_test, n_val) for a stratum of n subjects; train keeps at least one subject when n > 0."""
    n_test = int(n * test + 0.5)  # round half up (Python round() is banker's)
    n_val = int(n * val + 0.5)
    while n_test + n_val >= n and n_test + n_val > 0 and n > 0:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def assign_splits(subjects: pd.DataFrame, seed: int, val: float, test: float) -> dict[str, str]:
    """``subjects`` has one row per subject: subject_id, cohort, diagnosis (null = its own stratum)."""
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ValueError(f"split fractions val={val} test={test} must be in [0, 1) and sum below 1")
    out: dict[str, str] = {}
    strata = subjects.assign(diagnosis=subjects["diagnosis"].fillna("unknown").astype(str))
    for _, group in strata.groupby(["cohort", "diagnosis"], sort=True):
        ids = sorted(group["subject_id"].astype(str), key=lambda s: (subject_key(seed, s), s))
        n_test, n_val = stratum_sizes(len(ids), val, test)
        for rank, sid in enumerate(ids):
            out[sid] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def baseline_diagnosis(df: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: its cohort and the diagnosis of its earliest session with one."""
    days = pd.to_numeric(df["days_from_baseline"], errors="coerce").astype("float64")
    order = df.assign(_d=days.fillna(float("inf")))
    order = order.sort_values(["subject_id", "_d", "session_id"], kind="stable")
    first = order.dropna(subset=["diagnosis"]).drop_duplicates("subject_id")[["subject_id", "diagnosis"]]
    subjects = order.drop_duplicates("subject_id")[["subject_id", "cohort"]]
    return subjects.merge(first, on="subject_id", how="left")
