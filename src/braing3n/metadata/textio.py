"""Clinical spreadsheets as text: encoding, delimiter and header checks before pandas sees them.

Clinical exports come from Excel on Windows as often as from Python: UTF-8 with or without a
byte-order mark, cp1252/Latin-1, UTF-16 ("Unicode text"), separated by commas, semicolons
(European Excel) or tabs. Decoding: a table's ``encoding:`` if given, else a BOM, else UTF-8,
else cp1252 (a superset of Latin-1's printable characters). A byte that the chosen encoding
cannot decode never reaches the table: its cell is nulled and listed (``undecodable``), so no
U+FFFD is stored. The delimiter is a table's ``sep:`` if given, else the one of ``, ; TAB |``
that splits the header line into the most fields (ties: tab for .tsv/.txt, comma otherwise).
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import pandas as pd

from braing3n.metadata.issues import HarmoniseError, IssueLog

SEPARATORS = (",", ";", "\t", "|")
REPLACEMENT = "\ufffd"
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def check_encoding(name: str) -> str:
    """The codec's canonical name; ValueError for an unknown one."""
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        raise ValueError(f"unknown encoding {name!r}") from exc


def decode(raw: bytes, forced: str | None = None) -> tuple[str, str]:
    """(text, encoding used); bytes the encoding cannot decode become U+FFFD, which the
    caller turns into ``undecodable`` issues."""
    for bom, name in BOMS:
        if raw.startswith(bom) and (forced is None or check_encoding(forced).startswith(name[:6])):
            return raw[len(bom):].decode(name, errors="replace"), name
    if forced:
        return raw.decode(forced, errors="replace"), check_encoding(forced)
    for name in ("utf-8", "cp1252"):
        try:
            return raw.decode(name), name
        except UnicodeDecodeError:
            continue
    return raw.decode("cp1252", errors="replace"), "cp1252"


def sniff_separator(header: str, default: str) -> str:
    """The candidate separator that splits ``header`` into the most fields (ties: ``default``)."""
    counts = {sep: len(next(csv.reader([header], delimiter=sep), [])) for sep in SEPARATORS}
    best = max(counts.values())
    return default if counts.get(default, 0) == best or best <= 1 else max(counts, key=counts.get)


def _header_line(text: str, skip_rows) -> str:
    lines = text.splitlines()
    if isinstance(skip_rows, int):
        lines = lines[skip_rows:]
    elif skip_rows:
        lines = [line for i, line in enumerate(lines) if i not in set(skip_rows)]
    return next((line for line in lines if line.strip()), "")


def _columns(header: list, rel: str, log: IssueLog) -> tuple[list[str], list[int]]:
    """Header names and the indices of the columns to keep: a duplicated name is ambiguous
    (which ``sex`` is right?), so every column of that name is dropped and listed."""
    # an empty header cell is named as pandas names it (COBRE's first column: `Unnamed: 0`)
    names = [str(c).strip() or f"Unnamed: {j}" for j, c in enumerate(header)]
    for j, name in enumerate(names):
        if REPLACEMENT in name:
            clean = name.replace(REPLACEMENT, "?")
            log.add("undecodable", "kept", file=rel, row="header", column=clean,
                    detail="header cell has bytes the file's encoding cannot decode; set `encoding:`")
            names[j] = clean
    keep = []
    for j, name in enumerate(names):
        if names.count(name) > 1:
            if names.index(name) == j:
                log.add("duplicate_column", "dropped", file=rel, column=name,
                        detail=f"column {name!r} appears {names.count(name)} times in the header; "
                               "every copy is ignored (rename one)")
            continue
        keep.append(j)
    return names, keep


def load_csv(path: Path, rel: str, spec: dict, log: IssueLog) -> pd.DataFrame | None:
    """One clinical file as text cells (no NA handling yet), or None when it has no header."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HarmoniseError(f"{path}: cannot read clinical table: {exc}") from exc
    text, used = decode(raw, spec.get("encoding"))
    if not text.strip():
        log.add("empty_table", "nulled", file=rel, column=f"{spec['name']}.*",
                detail=f"clinical table {spec['name']!r}: the file is empty (no header, no rows)")
        return None
    if used == "cp1252" and not spec.get("encoding"):
        log.add("encoding_fallback", "kept", file=rel, detail="not valid UTF-8: read as cp1252 (Latin-1); "
                "set `encoding:` on the table if that is wrong")
    default = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    sep = spec.get("sep") or sniff_separator(_header_line(text, spec.get("skip_rows")), default)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False,
                         skiprows=spec.get("skip_rows"), skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise HarmoniseError(f"{path}: cannot read clinical table (separator {sep!r}): {exc}") from exc
    if df.empty:  # every line skipped by skip_rows
        log.add("empty_table", "nulled", file=rel, column=f"{spec['name']}.*",
                detail=f"clinical table {spec['name']!r}: no header line after skip_rows")
        return None
    names, keep = _columns(df.iloc[0].tolist(), rel, log)
    body = df.iloc[1:].reset_index(drop=True)
    body.columns = names
    body = body.iloc[:, keep]
    unnamed = [c for c in body.columns if c.startswith("Unnamed: ") and not body[c].str.strip().astype(bool).any()]
    body = body.drop(columns=unnamed)  # trailing separators of an Excel export
    return _null_undecodable(body, rel, used, log)


def _null_undecodable(df: pd.DataFrame, rel: str, encoding: str, log: IssueLog) -> pd.DataFrame:
    hits = df.apply(lambda col: col.str.contains(REPLACEMENT, regex=False, na=False))
    for j, col in enumerate(df.columns):
        for i in df.index[hits.iloc[:, j]]:
            log.add("undecodable", "nulled", file=rel, row=i + 1, column=col,
                    value=str(df.iat[i, j]).replace(REPLACEMENT, "?"),
                    detail=f"bytes that are not valid {encoding}; set `encoding:` on the table")
    return df.mask(hits, "")
