"""Per-cohort issues report: every nulled value, dropped row and unused clinical row, with its reason.

Strict mode turns the first *bad-input* issue (unknown code, out-of-range value, duplicate scan,
subject label clash, missing column, missing scan file, sex conflict) into a HarmoniseError naming file, row, column
and value. Informational issues (a clinical row with no scan, a scan with no clinical row) are
only recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

ISSUE_COLUMNS = ["cohort", "problem", "action", "file", "row", "column", "value", "scan_id", "detail"]
# Problems that are bad input (strict mode fails on them).
BAD_INPUT = {
    "unknown_code", "out_of_range", "bad_value", "duplicate_scan_id", "missing_column",
    "missing_scan_file", "sex_conflict", "bad_key", "duplicate_clinical_row", "subject_label_clash",
    "empty_table", "undecodable", "duplicate_column", "bad_sidecar",
}


class HarmoniseError(ValueError):
    """Bad input met in strict mode (or input that no mode can use)."""


@dataclass
class Issue:
    cohort: str
    problem: str
    action: str  # nulled | dropped | unused | kept
    file: str = ""
    row: str = ""
    column: str = ""
    value: str = ""
    scan_id: str = ""
    detail: str = ""

    def message(self) -> str:
        where = f"{self.file}" + (f":row {self.row}" if self.row != "" else "")
        what = f"column {self.column!r} value {self.value!r}: " if self.column else ""
        return f"{where or self.cohort}: {what}{self.problem.replace('_', ' ')}" + (
            f" ({self.detail})" if self.detail else "")


@dataclass
class IssueLog:
    cohort: str
    strict: bool = False
    issues: list[Issue] = field(default_factory=list)

    def add(self, problem: str, action: str, **kw) -> None:
        kw = {k: "" if v is None else str(v) for k, v in kw.items()}
        issue = Issue(self.cohort, problem, action, **kw)
        if self.strict and problem in BAD_INPUT:
            raise HarmoniseError(issue.message())
        self.issues.append(issue)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(i) for i in self.issues], columns=ISSUE_COLUMNS)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.issues:
            key = f"{i.problem}:{i.action}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))
