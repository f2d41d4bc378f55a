"""Every cohort mapping in config/cohorts/ harmonises its hand-made fixture to the expected rows.

Each fixture (tests/fixtures/cohorts/<mapping stem>/) holds the cohort's folder layout with
empty placeholder scans, its clinical files in the published format, expected.csv (values
worked out by hand from the data dictionary) and expected_issues.csv (the bad cells planted).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from braing3n.metadata.harmonise import harmonise_cohort
from braing3n.metadata.mapping import load_cohort_mapping

REPO = Path(__file__).resolve().parents[1]
# bids.yaml is generic: tests/test_bids.py runs it over the six real layouts of shared/bids-examples
MAPPINGS = sorted(m for m in (REPO / "config" / "cohorts").glob("*.yaml") if m.stem != "bids")
FIXTURES = REPO / "tests" / "fixtures" / "cohorts"


def test_enough_cohorts_have_mappings():
    public = [m for m in MAPPINGS if not m.stem.startswith("phantom")]
    assert len(public) >= 18, [m.stem for m in public]


@pytest.mark.parametrize("mapping", MAPPINGS, ids=[m.stem for m in MAPPINGS])
def test_mapping_matches_fixture(mapping):
    load_cohort_mapping(mapping)
    fixture = FIXTURES / mapping.stem
    assert (fixture / "expected.csv").is_file(), f"no fixture for {mapping.name}"
    df, log = harmonise_cohort(mapping.stem, str(mapping), fixture)
    expected = pd.read_csv(fixture / "expected.csv", dtype=str, keep_default_na=False)
    assert list(df["scan_id"]) == list(expected["scan_id"])
    for col in expected.columns:
        want = expected[col].replace("", None)
        got = df[col].astype(object).where(df[col].notna(), None)
        if col in ("age", "cdr", "cdr_sb", "mmse", "moca", "field_strength", "days_from_baseline"):
            np.testing.assert_allclose(got.astype(float), want.astype(float), atol=1e-3, err_msg=col)
        else:
            assert [None if g is None else str(g) for g in got] == list(want), col
    issues = log.frame()[["problem", "action", "file", "row", "column", "value"]]
    want_issues = pd.read_csv(fixture / "expected_issues.csv", dtype=str, keep_default_na=False)
    assert issues.astype(str).values.tolist() == want_issues.values.tolist()
    # every subject sits in exactly one split
    assert (df.groupby("subject_id")["split"].nunique() == 1).all()
