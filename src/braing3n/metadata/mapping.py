"""Cohort mapping YAML -> clinical tables joined onto the scan list (data, not code).

A mapping's clinical part (see docs/metadata.md for the full key list):

    na_values: ["-4", "NA"]                  # extra tokens meaning "missing"
    tables:
      - name: merge                          # short name used in field references
        path: ADNIMERGE.csv                  # under the cohort root; glob = concatenate; list = first existing
        subject: {column: PTID, regex: '(\\d+)_S_(\\d+)', scan_regex: 'ADNI(\\d+)S(\\d+)'}
        session: {column: VISCODE, values: {bl: m0}, regex: 'm(\\d+)', scan_regex: 'M(\\d+)'}
      - name: apoe
        path: APOERES.csv
        join: {table: merge, left: RID, right: RID}   # join onto an earlier table instead of the scans
    fields:
      sex: {column: merge.PTGENDER, values: {Male: M, Female: F}}

Keys compare as text after the optional regex (groups joined by "|", leading zeros of digit
groups stripped), so ``0050002`` meets ``50002`` and ``UCSF-PDGM-0004`` meets ``UCSF-PDGM-004``.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pandas as pd

from braing3n.metadata.discover import load_mapping, mapping_path
from braing3n.metadata.issues import HarmoniseError, IssueLog
from braing3n.metadata.textio import check_encoding, load_csv

NA_TOKENS = {"", "na", "n/a", "nan", "none", "null", "unknown", "not available", "-", "."}
TABLE_KEYS = {"name", "path", "sep", "encoding", "subject", "session", "join", "skip_rows", "optional"}
KEY_KEYS = {"column", "path_regex", "regex", "scan_regex", "values", "match", "tolerance", "date"}
SESSION_FROM = {"subject", "session"}


def load_cohort_mapping(path: str) -> dict:
    """Read and check a cohort mapping (scans + clinical sections); errors name the file and key."""
    path = mapping_path(path)
    mapping = load_mapping(path)
    known = {"scans", "tables", "fields", "na_values", "description", "source"}
    extra = set(mapping) - known
    if extra:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(extra)} (allowed: {sorted(known)})")
    names = []
    for i, t in enumerate(mapping.get("tables") or []):
        where = f"{path}: tables[{i}]"
        if not isinstance(t, dict) or "name" not in t or "path" not in t:
            raise ValueError(f"{where}: each table needs 'name' and 'path'")
        bad = set(t) - TABLE_KEYS
        if bad:
            raise ValueError(f"{where}: unknown key(s) {sorted(bad)} (allowed: {sorted(TABLE_KEYS)})")
        if "encoding" in t:
            try:
                check_encoding(str(t["encoding"]))
            except ValueError as exc:
                raise ValueError(f"{where} ({t['name']}): encoding: {exc}") from None
        if "sep" in t and (not isinstance(t["sep"], str) or len(t["sep"]) != 1):
            raise ValueError(f"{where} ({t['name']}): sep must be one character (',', ';', '\\t', '|'), "
                             f"got {t['sep']!r}")
        if ("join" in t) == ("subject" in t):
            raise ValueError(f"{where} ({t['name']}): give exactly one of 'subject' (join to scans) or 'join'")
        if "join" in t and t["join"].get("table") not in names:
            raise ValueError(f"{where} ({t['name']}): join.table must name an earlier table, got "
                             f"{t['join'].get('table')!r}")
        for key in ("subject", "session"):
            if key in t and set(t[key]) - KEY_KEYS:
                raise ValueError(f"{where}.{key}: unknown key(s) {sorted(set(t[key]) - KEY_KEYS)}")
            if key in t and ("column" in t[key]) == ("path_regex" in t[key]):
                raise ValueError(f"{where}.{key}: give exactly one of 'column' or 'path_regex'")
        names.append(t["name"])
    from braing3n.metadata.fields import DAYS_PER, FIELD_KEYS

    UNITS = {*DAYS_PER, "date"}
    from braing3n.metadata.schema import CLINICAL

    for name, spec in (mapping.get("fields") or {}).items():
        if name not in CLINICAL:
            raise ValueError(f"{path}: fields.{name} is not a clinical field of the schema ({', '.join(CLINICAL)})")
        if not isinstance(spec, dict) or set(spec) - FIELD_KEYS:
            raise ValueError(f"{path}: fields.{name} must be a mapping with keys from {sorted(FIELD_KEYS)}")
        if spec.get("unit", "days") not in UNITS:
            raise ValueError(f"{path}: fields.{name}.unit {spec['unit']!r} is not one of {sorted(UNITS)}")
        if spec.get("from", "subject") not in ("subject", "session"):
            raise ValueError(f"{path}: fields.{name}.from must be 'subject' or 'session', got {spec['from']!r}")
    return mapping


def text(value) -> str | None:
    """Cell -> stripped text; None for missing. Integral floats lose their '.0' (1.0 -> '1')."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_key(value, regex: str | None = None, values: dict | None = None, date: bool = False) -> str | None:
    """Comparable key text; with ``date`` the (regex-extracted) text is a date -> days since 1970."""
    s = text(value)
    if s is None or s == "":
        return None
    if values:
        s = str({text(k): v for k, v in values.items()}.get(s, s))
    if regex:
        m = re.search(regex, s)
        if not m:
            return None
        parts = m.groups() or (m.group(0),)
    else:
        parts = (s,)
    if date:
        ts = pd.to_datetime(" ".join(parts), errors="coerce")
        return None if pd.isna(ts) else str((ts - pd.Timestamp(1970, 1, 1)).days)
    return "|".join(p.lstrip("0") or "0" if p and p.isdigit() else (p or "") for p in parts)


def resolve_paths(root: Path, spec) -> list[Path]:
    """A table's files: a list means "first alternative that exists"; a glob concatenates."""
    for alt in spec if isinstance(spec, list) else [spec]:
        hits = sorted(glob.glob(str(root / alt)))
        if hits:
            return [Path(h) for h in hits]
    return []


def read_table(paths: list[Path], root: Path, spec: dict, na_values: set[str], log: IssueLog) -> pd.DataFrame:
    """All files of a table as text, with ``__file`` (relative) and ``__row`` (1-based data row).

    Encoding, separator, duplicated and undecodable cells: see ``textio``. An empty file or a
    header without rows is an ``empty_table`` issue (its scans lose only what it would give)."""
    frames = []
    for p in paths:
        rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        if p.suffix.lower() in (".xls", ".xlsx"):
            raise HarmoniseError(f"{p}: cannot read clinical table: spreadsheets are read as CSV/TSV: "
                                 "export this sheet to CSV next to it")
        df = load_csv(p, rel, spec, log)
        if df is None:
            continue
        if len(df) == 0:  # a header-only export: its scans would lose this table's fields quietly
            log.add("empty_table", "nulled", file=rel, column=f"{spec['name']}.*",
                    detail=f"clinical table {spec['name']!r}: this file has a header but no rows")
        df = df.apply(lambda col: col.map(lambda v: None if str(v).strip().lower() in na_values else str(v).strip()))
        df["__file"] = rel
        df["__row"] = range(1, len(df) + 1)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _key_column(df: pd.DataFrame, spec: dict, table: str, file: str, log: IssueLog) -> pd.Series:
    if "path_regex" in spec:  # the key is in the file's path (BIDS sub-01/sub-01_sessions.tsv)
        keys = df["__file"].map(lambda f: (lambda m: m and m.group(1))(re.search(spec["path_regex"], f)))
        keys = keys.map(lambda v: normalise_key(v, spec.get("regex"), spec.get("values"), spec.get("date", False)))
        for i in df.index[keys.isna()]:
            log.add("bad_key", "dropped", file=df.at[i, "__file"], row=df.at[i, "__row"], column="(file path)",
                    value=df.at[i, "__file"], detail=f"path does not match path_regex {spec['path_regex']!r}")
        return keys
    cols = spec["column"] if isinstance(spec["column"], list) else [spec["column"]]
    col = next((c for c in cols if c in df.columns), cols[0])  # a list: first that exists
    if col not in df.columns:
        raise HarmoniseError(f"{file}: missing key column {col!r} of table {table!r} "
                             f"(columns: {', '.join(c for c in df.columns if not c.startswith('__'))})")
    keys = df[col].map(lambda v: normalise_key(v, spec.get("regex"), spec.get("values"), spec.get("date", False)))
    for i in df.index[keys.isna() & df[col].notna()]:
        log.add("bad_key", "dropped", file=df.at[i, "__file"], row=df.at[i, "__row"], column=col,
                value=df.at[i, col], detail=f"does not match key regex {spec.get('regex')!r}")
    return keys


def _scan_keys(scans: pd.DataFrame, spec: dict, raw: str) -> pd.Series:
    return scans[raw].map(lambda v: normalise_key(v, spec.get("scan_regex"), None, spec.get("date", False)))


def join_tables(scans: pd.DataFrame, mapping: dict, root: Path, log: IssueLog) -> tuple[pd.DataFrame, list[str]]:
    """Left-join every clinical table onto the scan rows; columns become ``{table}.{column}``.

    Returns the wide frame and the names of tables that were found on disk.
    """
    na_values = NA_TOKENS | {str(v).strip().lower() for v in mapping.get("na_values") or []}
    wide = scans.copy()
    present = []
    for spec in mapping.get("tables") or []:
        name = spec["name"]
        paths = resolve_paths(root, spec["path"])
        if not paths:
            problem = "absent_table" if spec.get("optional") else "missing_column"  # optional: not bad input
            log.add(problem, "nulled", file=str(spec["path"]), column=f"{name}.*",
                    detail=f"clinical table {name!r} not found under {root}; its fields are null")
            continue
        df = read_table(paths, root, spec, na_values, log)
        if "__file" not in df.columns:  # every file empty (listed): the table is absent
            continue
        file0 = df["__file"].iloc[0] if len(df) else str(paths[0])
        keys = []
        if "join" in spec:
            j = spec["join"]
            lefts, rights = (j[k] if isinstance(j[k], list) else [j[k]] for k in ("left", "right"))
            for n, (left, right) in enumerate(zip(lefts, rights, strict=True)):
                if right not in df.columns:
                    raise HarmoniseError(f"{file0}: missing join column {right!r} of table {name!r}")
                if f"{j['table']}.{left}" not in wide.columns:
                    raise HarmoniseError(f"{file0}: table {name!r} joins on {j['table']}.{left}, which is not a column")
                df[f"__k{n}"] = df[right].map(normalise_key)
                wide[f"__k{n}"] = wide[f"{j['table']}.{left}"].map(normalise_key)
                keys.append(f"__k{n}")
        else:
            df["__k0"] = _key_column(df, spec["subject"], name, file0, log)
            wide["__k0"] = _scan_keys(wide, spec["subject"], "subject_raw")
            keys = ["__k0"]
            if "session" in spec:
                df["__k1"] = _key_column(df, spec["session"], name, file0, log)
                wide["__k1"] = _scan_keys(wide, spec["session"], "session_raw")
                keys.append("__k1")
        df = df.dropna(subset=keys)
        dup = df.duplicated(subset=keys, keep="first")
        for i in df.index[dup]:
            log.add("duplicate_clinical_row", "dropped", file=df.at[i, "__file"], row=df.at[i, "__row"],
                    value=" / ".join(str(df.at[i, k]) for k in keys), detail="same key as an earlier row")
        df = df[~dup]
        renamed = df.rename(columns={c: f"{name}.{c}" for c in df.columns if c not in keys})
        session = spec.get("session", {})
        if session.get("match") == "nearest":
            wide = _nearest_merge(wide, renamed, float(session.get("tolerance", 365)))
        else:
            wide = wide.merge(renamed, on=keys, how="left")
        used = set(zip(*[wide[k] for k in keys], strict=True)) if len(wide) else set()
        if session.get("match") != "nearest":
            unused = [t not in used for t in zip(*[df[k] for k in keys], strict=True)]
            for i in df.index[unused]:
                log.add("no_scan", "unused", file=df.at[i, "__file"], row=df.at[i, "__row"],
                            value=" / ".join(str(df.at[i, k]) for k in keys),
                            detail=f"clinical row of table {name!r} matches no scan")
        for i in wide.index[wide[f"{name}.__row"].isna()]:
            log.add("no_clinical_row", "kept", file=file0, scan_id=wide.at[i, "scan_id"],
                    value=" / ".join(str(wide.at[i, k]) for k in keys), detail=f"no row in table {name!r}")
        wide = wide.drop(columns=keys)
        present.append(name)
    return wide, present


def _nearest_merge(wide: pd.DataFrame, table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Match each scan to the subject's clinical row nearest in time (keys are day numbers)."""
    w = wide.assign(__t=pd.to_numeric(wide["__k1"], errors="coerce").astype("float64")).reset_index(names="__order")
    t = table.assign(__t=pd.to_numeric(table["__k1"], errors="coerce").astype("float64")).drop(columns=["__k1"])
    w_ok, w_bad = w[w["__t"].notna()].sort_values("__t"), w[w["__t"].isna()]
    t = t[t["__t"].notna()].sort_values("__t")
    merged = pd.merge_asof(w_ok, t, on="__t", by="__k0", direction="nearest", tolerance=tolerance)
    out = pd.concat([merged, w_bad], ignore_index=True).sort_values("__order")
    return out.drop(columns=["__t", "__order"]).reset_index(drop=True)


def table_columns(wide: pd.DataFrame) -> dict[str, list[str]]:
    """Bare column name -> qualified ``table.column`` names present in the wide frame."""
    out: dict[str, list[str]] = {}
    for c in wide.columns:
        if "." in c and not c.split(".", 1)[1].startswith("__"):
            out.setdefault(c.split(".", 1)[1], []).append(c)
    return out


def resolve_column(wide: pd.DataFrame, ref: str, where: str) -> str | None:
    """``table.COL`` or bare ``COL`` -> the wide frame's column (None when absent)."""
    if ref in wide.columns:
        return ref
    hits = table_columns(wide).get(ref, [])
    if len(hits) > 1:
        raise HarmoniseError(f"{where}: column {ref!r} is in several tables ({', '.join(hits)}); "
                             f"write it as table.column")
    return hits[0] if hits else None


def clinical_files(mapping: dict, root: str | Path, declared: bool = False) -> list[str]:
    """The clinical files a mapping reads under ``root`` (Snakemake inputs of `harmonise`).

    Existing files only, unless ``declared``: then a table whose file is not there yet (a
    phantom cohort before synthesis) contributes its plain, glob-free path.
    """
    root = Path(root)
    out: list[str] = []
    for spec in mapping.get("tables") or []:
        found = resolve_paths(root, spec["path"])
        if found:
            out += [str(p) for p in found]
        elif declared:
            first = spec["path"][0] if isinstance(spec["path"], list) else spec["path"]
            if not any(ch in str(first) for ch in "*?["):
                out.append(str(root / first))
    return out
