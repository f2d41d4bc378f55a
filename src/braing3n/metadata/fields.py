"""Turn the joined wide frame into canonical clinical fields, one mapping spec per field.

Field spec keys (all optional except one source):
  column: COL | table.COL | [COL, ...]   source column (a list: the first that exists)
  from: subject | session                 the raw subject/session text of the file path
  constant: VALUE                         the same value for every scan (e.g. diagnosis: GBM)
  alleles: [COL1, COL2]                   APOE genotype from two allele columns (3, 4 -> e3/e4)
  values: {code: canonical}               exact map (case-insensitive fallback); ~ = explicit null
  patterns: {regex: replacement}          tried in order when no exact code matches; \\1 allowed
  unit: years|months|weeks|days|date      age -> years, days_from_baseline -> days; date = parse
                                          dates, days since the subject's first scan
  relative: true                          subtract the subject's smallest value (OASIS d0129)
  birth: COL                              age = column (a date) - birth (a date or a year)
  optional: true                          a column no table has is `absent_column` (recorded), not bad input
  at_visit: true | absolute               age += days_from_baseline / 365.25 (age at baseline given);
                                          absolute: the days before making them relative (OASIS:
                                          age at entry + d0129)
A value that no code or pattern matches is an ``unknown_code``; a value outside the schema's
range is ``out_of_range``; both become null (lenient) or stop the run (strict).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from braing3n.metadata.issues import IssueLog
from braing3n.metadata.mapping import resolve_column, text
from braing3n.metadata.schema import FIELD_BY_NAME, check_value

FIELD_KEYS = {"column", "from", "constant", "alleles", "values", "patterns", "unit", "relative", "birth",
              "at_visit", "optional"}
DAYS_PER = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}
DEFAULT_PATTERNS = {
    "scanner_vendor": {r"(?i)siemens": "Siemens", r"(?i)\bge\b|general electric|^ge": "GE",
                       r"(?i)philips": "Philips", r"(?i)toshiba|canon": "Toshiba", r"(?i)hitachi": "Hitachi"},
    "field_strength": {r"(\d+(?:\.\d+)?)": r"\1"},
    "apoe": {r"^\D*([234])\D*([234])\D*$": r"\1\2"},
}
DEFAULT_VALUES = {"sex": {"M": "M", "F": "F", "male": "M", "female": "F"}}
# Order matters: age may need days_from_baseline.
ORDER = ["days_from_baseline"]


class Codes:
    """A field's code table: exact map, case-insensitive fallback, then ordered regex patterns."""

    def __init__(self, values: dict | None, patterns: dict | None):
        self.exact = {text(k): v for k, v in (values or {}).items()}
        self.folded = {str(k).casefold(): v for k, v in self.exact.items()}
        self.patterns = [(re.compile(r), repl) for r, repl in (patterns or {}).items()]
        self.passthrough = not values and not patterns

    def lookup(self, raw: str):
        """(matched, value) for a raw code; value None = explicit null."""
        if raw in self.exact:
            return True, self.exact[raw]
        if raw.casefold() in self.folded:
            return True, self.folded[raw.casefold()]
        for regex, repl in self.patterns:
            m = regex.search(raw)
            if m:
                return True, m.expand(str(repl)) if repl is not None else None
        return self.passthrough, raw


def _genotype(a: str) -> str:
    return "e{}/e{}".format(*sorted(a[:2]))


def _year_or_date(v: str | None) -> pd.Timestamp | None:
    if v is None:
        return None
    m = re.fullmatch(r"\D*(\d{4})\D*", v)
    if m:  # year only (e.g. AIBL '/1935'): mid-year
        return pd.Timestamp(int(m.group(1)), 7, 1)
    ts = pd.to_datetime(v, errors="coerce")
    return None if pd.isna(ts) else ts


class FieldBuilder:
    """Computes one canonical column at a time, logging each bad cell once."""

    def __init__(self, wide: pd.DataFrame, log: IssueLog, mapping_path: str):
        self.wide, self.log, self.where = wide, log, mapping_path
        self.seen: set[tuple] = set()
        self.sources: dict[int, dict[str, str]] = {i: {} for i in wide.index}
        self.absolute_days: pd.Series | None = None  # days_from_baseline before `relative`
        self._origin: dict[str, dict] = {}

    def _issue(self, i, problem, action, column, file, row, value, detail=""):
        key = (problem, file, row, column, value)
        if key in self.seen:
            return
        self.seen.add(key)
        self.log.add(problem, action, file=file, row=row, column=column, value=value,
                     scan_id=self.wide.at[i, "scan_id"], detail=detail)

    def _where(self, i, col: str) -> tuple[str, str]:
        """(file, 1-based row) a cell came from; records it as the scan row's source."""
        if col in ("subject_raw", "session_raw"):
            return self.wide.at[i, "raw_path"], ""
        table = col.split(".", 1)[0]
        if table not in self._origin:  # column -> dict lookups are ~10x faster than .at per cell
            files, rows = self.wide[f"{table}.__file"], self.wide[f"{table}.__row"]
            self._origin[table] = {
                k: (str(f), "" if pd.isna(r) else str(int(r)))  # a JSON sidecar has no row
                for k, f, r in zip(self.wide.index, files, rows, strict=True)
                if isinstance(f, str)}
        where = self._origin[table].get(i)
        if where is None:
            return "", ""
        self.sources[i][where[0]] = where[1]
        return where

    def _column(self, name: str, refs, optional: bool = False) -> str | None:
        refs = refs if isinstance(refs, list) else [refs]
        for ref in refs:
            col = resolve_column(self.wide, str(ref), self.where)
            if col is not None:
                return col
        if optional:  # a generic mapping (BIDS) names columns a dataset may not have
            self.log.add("absent_column", "nulled", file=self.where, column=" | ".join(map(str, refs)),
                         detail=f"optional field {name!r}: no clinical table or sidecar has the column")
            return None
        files = sorted({str(f) for c in self.wide.columns if c.endswith(".__file")
                        for f in self.wide[c].dropna().unique()})
        self.log.add("missing_column", "nulled", file=self.where, column=" | ".join(map(str, refs)),
                     detail=f"field {name!r} maps to a column none of the clinical tables has "
                            f"({', '.join(Path(f).name for f in files) or 'none read'}); {name} is null")
        return None

    def build(self, name: str, spec: dict, days: pd.Series | None = None) -> pd.Series:
        f = FIELD_BY_NAME[name]
        out = pd.Series([None] * len(self.wide), index=self.wide.index, dtype=object)
        if "constant" in spec:
            src_col = None
            raw = pd.Series([text(spec["constant"])] * len(self.wide), index=self.wide.index)
        elif "from" in spec:
            src_col = f"{spec['from']}_raw"
            raw = self.wide[src_col].map(text)
        elif "alleles" in spec:
            cols = [self._column(name, c) for c in spec["alleles"]]
            if None in cols:
                return out
            src_col = cols[0]
            raw = self.wide[cols].apply(
                lambda r: None if r.isna().any() else "".join(text(v) for v in r), axis=1)
        else:
            src_col = self._column(name, spec.get("column"), bool(spec.get("optional")))
            if src_col is None:
                return out
            raw = self.wide[src_col].map(text)
        codes = Codes(spec.get("values", DEFAULT_VALUES.get(name) if "patterns" not in spec else None),
                      spec.get("patterns", DEFAULT_PATTERNS.get(name) if "values" not in spec else None))
        birth_col = self._column(name, spec["birth"]) if "birth" in spec else None
        unit = spec.get("unit", "years" if name == "age" else "days")
        vals: dict = {}  # plain dict: Series.at per cell costs ~60 us, this loop runs rows x fields
        for i, v in zip(self.wide.index, raw.tolist(), strict=True):
            if v is None or v == "":
                continue
            file, row = self._where(i, src_col) if src_col else (self.where, "")
            col_label = (src_col or "constant").split(".", 1)[-1]
            if birth_col is not None:
                date, birth = _year_or_date(v), _year_or_date(text(self.wide.at[i, birth_col]))
                if date is None or birth is None:
                    if birth is not None or date is not None:
                        self._issue(i, "bad_value", "nulled", col_label, file, row, v, "cannot parse date")
                    continue
                vals[i] = (date - birth).days / 365.25
                continue
            ok, mapped = codes.lookup(v)
            if not ok:
                self._issue(i, "unknown_code", "nulled", col_label, file, row, v, f"no code for {name}")
                continue
            if mapped is None:
                continue
            if name == "apoe":  # any spelling of two alleles -> sorted 'e3/e4'
                m = re.fullmatch(r"\D*([234])\D*([234])\D*", str(mapped))
                mapped = _genotype(m.group(1) + m.group(2)) if m else mapped
            if unit == "date":
                ts = pd.to_datetime(mapped, errors="coerce")
                if pd.isna(ts):
                    self._issue(i, "bad_value", "nulled", col_label, file, row, v, "not a date")
                    continue
                vals[i] = ts
                continue
            try:
                typed = float(mapped) if f.kind in ("float", "int") else str(mapped)
            except ValueError:
                self._issue(i, "bad_value", "nulled", col_label, file, row, v, f"{name} must be a number")
                continue
            if f.kind == "int":
                if not float(typed).is_integer():
                    self._issue(i, "bad_value", "nulled", col_label, file, row, v, f"{name} must be an integer")
                    continue
                typed = int(typed)
            if name == "age" and unit != "years":
                typed = typed * DAYS_PER[unit] / 365.25
            elif name == "days_from_baseline":
                typed = typed * DAYS_PER[unit]
            vals[i] = typed
        out = pd.Series([vals.get(i) for i in self.wide.index], index=self.wide.index, dtype=object)
        if name == "days_from_baseline" and unit != "date":
            self.absolute_days = out.copy()
        if unit == "date" or spec.get("relative"):
            out = self._relative(out, unit == "date")
        if name == "days_from_baseline" and unit == "date":
            self.absolute_days = out  # dates have no absolute origin: days since the first scan
        if spec.get("at_visit") and name == "age":
            days = self.absolute_days if spec["at_visit"] == "absolute" else days
            out = pd.Series([None if a is None or days is None or pd.isna(days.at[i]) else a + days.at[i] / 365.25
                             for i, a in out.items()], index=out.index, dtype=object)
        return self._check(name, out, src_col)

    def _relative(self, out: pd.Series, dates: bool) -> pd.Series:
        """Subtract each subject's smallest value (days since the subject's first scan). A subject
        with a session whose value is unknown (no clinical row, a bad date, a visit label the
        pattern does not match) gets none: that session may be the first one, and counting from
        a later visit would shift every interval and age."""
        known = out.dropna()
        if known.empty:
            return out
        subject = self.wide["subject_id"]
        session_known = out.notna().groupby([subject, self.wide["session_raw"]], dropna=False).any()
        some, every = session_known.groupby(level=0).any(), session_known.groupby(level=0).all()
        # a subject with no known value at all has nothing to shift: only partly known ones are unsure
        unsure = set(some.index[some & ~every])
        gaps = session_known[~session_known].reset_index()
        first_row = pd.Series(self.wide.index, index=self.wide.index).groupby(subject).first()
        for subj, sessions in gaps[gaps["subject_id"].isin(unsure)].groupby("subject_id")["session_raw"]:
            self._issue(first_row[subj], "unknown_baseline", "nulled", "", self.where, "", subj,
                        f"session(s) {', '.join(map(str, sessions))} of {subj} have no value, so the first "
                        "session is unknown: days from baseline (and ages counted from them) nulled for the subject")
        known = known[~subject.loc[known.index].isin(unsure)]
        result = pd.Series([None] * len(out), index=out.index, dtype=object)
        if known.empty:
            return result
        known = pd.to_datetime(known) if dates else pd.to_numeric(known).astype("float64")
        first = known.groupby(subject.loc[known.index]).transform("min")
        delta = known - first
        delta = delta.dt.days.astype("float64") if dates else delta
        result.loc[delta.index] = delta.astype(object)
        return result

    def _check(self, name: str, out: pd.Series, src_col: str | None) -> pd.Series:
        for i, v in out.items():
            if v is None:
                continue
            problem = check_value(name, v)
            if problem:
                file, row = self._where(i, src_col) if src_col else (self.where, "")
                col = (src_col or "constant").split(".", 1)[-1]
                self._issue(i, problem, "nulled", col, file, row, str(v), f"{name} not allowed")
                out.at[i] = None
        return out


def build_fields(wide: pd.DataFrame, mapping: dict, log: IssueLog, mapping_path: str) -> tuple[pd.DataFrame, dict]:
    """All clinical fields of the mapping; returns (columns frame, {row: {file: row}} sources)."""
    specs = mapping.get("fields") or {}
    builder = FieldBuilder(wide, log, mapping_path)
    cols: dict[str, pd.Series] = {}
    for name in sorted(specs, key=lambda n: (n not in ORDER, n)):
        cols[name] = builder.build(name, specs[name], cols.get("days_from_baseline"))
    if "apoe_e4_count" not in cols and "apoe" in cols:
        cols["apoe_e4_count"] = cols["apoe"].map(lambda g: None if g is None else str(g).count("4"))
    return pd.DataFrame(cols, index=wide.index), builder.sources
