"""Per-subject splits: deterministic, stratified, disjoint, stable when another cohort is added."""

import numpy as np
import pandas as pd
import pytest

from braing3n.metadata.splits import assign_splits, stratum_sizes, subject_key


def cohort(name: str, n: int, diagnoses=("HC", "AD", "MCI"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"subject_id": [f"{name}:{i:05d}" for i in range(n)], "cohort": name,
                         "diagnosis": rng.choice(list(diagnoses), size=n)})


def test_stratum_sizes():
    assert stratum_sizes(100, 0.15, 0.15) == (15, 15)
    assert stratum_sizes(10, 0.15, 0.15) == (2, 2)  # 1.5 rounds half up
    assert stratum_sizes(1, 0.15, 0.15) == (0, 0)
    assert stratum_sizes(2, 0.5, 0.4) == (1, 0)  # train keeps one subject
    assert stratum_sizes(0, 0.2, 0.2) == (0, 0)


def test_fractions_exact_within_each_stratum():
    subjects = cohort("A", 600)
    splits = assign_splits(subjects, seed=3, val=0.1, test=0.2)
    df = subjects.assign(split=subjects["subject_id"].map(splits))
    for _, g in df.groupby("diagnosis"):
        n = len(g)
        counts = g["split"].value_counts()
        assert counts["test"] == int(n * 0.2 + 0.5) and counts["val"] == int(n * 0.1 + 0.5)
        assert counts["train"] == n - counts["test"] - counts["val"]


def test_deterministic_and_seed_dependent():
    subjects = cohort("A", 300)
    a = assign_splits(subjects, 0, 0.15, 0.15)
    assert a == assign_splits(subjects.sample(frac=1, random_state=1), 0, 0.15, 0.15)  # row order irrelevant
    b = assign_splits(subjects, 1, 0.15, 0.15)
    changed = sum(a[s] != b[s] for s in a)
    assert 50 < changed < 250  # a new seed reshuffles a good part, not all
    assert subject_key(0, "A:1") == subject_key(0, "A:1") != subject_key(1, "A:1")


def test_stable_when_another_cohort_is_added():
    a = cohort("A", 250)
    before = assign_splits(a, 7, 0.15, 0.15)
    both = pd.concat([a, cohort("B", 400, diagnoses=("HC", "AD"), seed=5)], ignore_index=True)
    after = assign_splits(both, 7, 0.15, 0.15)
    assert {s: after[s] for s in before} == before
    assert len(after) == 650 and set(after.values()) == {"train", "val", "test"}


def test_no_subject_in_two_splits_across_sessions():
    # one row per scan: several sessions/modalities of the same subjects
    subjects = cohort("A", 120)
    splits = assign_splits(subjects, 0, 0.2, 0.2)
    scans = subjects.loc[subjects.index.repeat(5)].assign(split=lambda d: d["subject_id"].map(splits))
    assert (scans.groupby("subject_id")["split"].nunique() == 1).all()
    test_ids, train_ids = (set(scans.loc[scans["split"] == s, "subject_id"]) for s in ("test", "train"))
    assert test_ids and train_ids and not test_ids & train_ids


def test_bad_fractions():
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(cohort("A", 5), 0, 0.6, 0.5)
