"""Clinical spreadsheets as users export them: encodings, delimiters, broken headers, empty files.

Each case writes one small cohort (three empty scan files + `demo.csv`) and asserts what
harmonise stores and reports in lenient mode and what strict mode does. No data files: every
spreadsheet is built here, byte by byte.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd
import pytest
import yaml

from braing3n.metadata.harmonise import Settings, harmonise_cohort
from braing3n.metadata.issues import HarmoniseError
from braing3n.metadata.mapping import load_cohort_mapping

ROWS = [("1", "M", "34", "Zürich"), ("2", "F", "51", "Genève – Nord"), ("3", "F", "27", "Köln")]
HEADER = ("id", "sex", "age", "city")


def table(sep: str = ",", rows=ROWS, header=HEADER) -> str:
    return "\n".join(sep.join(r) for r in [header, *rows]) + "\n"


def cohort(tmp_path: Path, data: bytes, **table_keys) -> tuple[str, Path]:
    root = tmp_path / "raw"
    root.mkdir(parents=True)
    for subject in ("S1", "S2", "S3"):
        (root / f"{subject}_T1.nii.gz").write_bytes(b"")
    (root / "demo.csv").write_bytes(data)
    mapping = {
        "scans": {"pattern": "{subject}_{modality}.nii.gz", "modalities": {"T1": "T1"}},
        "tables": [{"name": "demo", "path": "demo.csv", "subject": {"column": "id", "scan_regex": r"S(\d+)"},
                    **table_keys}],
        "fields": {"sex": {"column": "sex"}, "age": {"column": "age"}, "site": {"column": "city"}},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    return str(path), root


def run(tmp_path, data, strict=False, **keys):
    mapping, root = cohort(tmp_path, data, **keys)
    return harmonise_cohort("enc", mapping, root, Settings(strict=strict))


def problems(log) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for i in log.issues:
        out.setdefault(i.problem, []).append((Path(i.file).name, i.row, i.column, i.value))
    return out


SITES = ["Zürich", "Genève – Nord", "Köln"]
UNREAD = [("m.yaml", "", c, "") for c in ("age", "city", "sex")]
GOOD = {"site": SITES, "sex": ["M", "F", "F"], "age": [34.0, 51.0, 27.0]}

# name -> (file bytes, table keys, lenient values, lenient issues {problem: [(file,row,column,value)]},
#          strict: None = passes with the same values, else the error's regex)
CASES = {
    "utf8": (table().encode(), {}, GOOD, {}, None),
    "utf8_bom": (codecs.BOM_UTF8 + table().encode(), {}, GOOD, {}, None),
    "cp1252": (table().encode("cp1252"), {}, GOOD, {"encoding_fallback": [("demo.csv", "", "", "")]}, None),
    "latin1": (table(rows=[r for r in ROWS if "–" not in r[3]] + [("2", "F", "51", "Genève")]).encode("latin-1"),
               {}, {**GOOD, "site": ["Zürich", "Genève", "Köln"]},
               {"encoding_fallback": [("demo.csv", "", "", "")]}, None),
    "utf16_excel_unicode_text": (codecs.BOM_UTF16_LE + table("\t").encode("utf-16-le"), {}, GOOD, {}, None),
    "forced_latin1": (table(rows=[("1", "M", "34", "Zürich"), ("2", "F", "51", "Genève"), ("3", "F", "27", "Köln")])
                      .encode("latin-1"), {"encoding": "latin-1"}, {**GOOD, "site": ["Zürich", "Genève", "Köln"]},
                      {}, None),
    # 0x81 is undefined in cp1252: that cell cannot be decoded by any fallback
    "undecodable_byte": (table().encode("cp1252").replace(b"K\xf6ln", b"K\x81ln"), {},
                         {**GOOD, "site": ["Zürich", "Genève – Nord", None]},
                         {"encoding_fallback": [("demo.csv", "", "", "")],
                          "undecodable": [("demo.csv", "3", "city", "K?ln")]},
                         r"demo.csv:row 3: column 'city' value 'K\?ln': undecodable"),
    "forced_utf8_on_latin1": (table().encode("cp1252"), {"encoding": "utf-8"},
                              {**GOOD, "site": [None, None, None]},
                              {"undecodable": [("demo.csv", "1", "city", "Z?rich"),
                                               ("demo.csv", "2", "city", "Gen?ve ? Nord"),
                                               ("demo.csv", "3", "city", "K?ln")]},
                              r"demo.csv:row 1: column 'city' value 'Z\?rich': undecodable"),
    "stored_replacement_char": (table().replace("Köln", "K\ufffdln").encode(), {},
                                {**GOOD, "site": ["Zürich", "Genève – Nord", None]},
                                {"undecodable": [("demo.csv", "3", "city", "K?ln")]}, r"row 3: column 'city'"),
    "semicolon": (table(";").encode("cp1252"), {}, GOOD, {"encoding_fallback": [("demo.csv", "", "", "")]}, None),
    "tab_in_csv": (table("\t").encode(), {}, GOOD, {}, None),
    "pipe": (table("|").encode(), {}, GOOD, {}, None),
    "sep_forced": (table(";").encode(), {"sep": ";"}, GOOD, {}, None),
    "trailing_separators": (table().replace("\n", ",,\n").encode(), {}, GOOD, {}, None),
    "duplicated_column": (table(header=("id", "sex", "age", "sex"),
                                rows=[(a, b, c, "F") for a, b, c, _ in ROWS]).encode(), {},
                          {"site": [None] * 3, "sex": [None] * 3, "age": [34.0, 51.0, 27.0]},
                          {"duplicate_column": [("demo.csv", "", "sex", "")],
                           "missing_column": [("m.yaml", "", "sex", ""), ("m.yaml", "", "city", "")]},
                          r"demo.csv: column 'sex' value '': duplicate column \(column 'sex' appears 2 times"),
    # no header either: the fields' columns are nowhere (listed once per field)
    "empty_file": (b"", {}, {"site": [None] * 3, "sex": [None] * 3, "age": [None] * 3},
                   {"empty_table": [("demo.csv", "", "demo.*", "")], "missing_column": UNREAD},
                   r"demo.csv: column 'demo.\*'.*empty table"),
    "whitespace_only": (b"\n \r\n\n", {}, {"site": [None] * 3, "sex": [None] * 3, "age": [None] * 3},
                        {"empty_table": [("demo.csv", "", "demo.*", "")], "missing_column": UNREAD},
                        r"demo.csv: .*empty table"),
    "header_only": (table(rows=[]).encode(), {}, {"site": [None] * 3, "sex": [None] * 3, "age": [None] * 3},
                    {"empty_table": [("demo.csv", "", "demo.*", "")],
                     "no_clinical_row": [("demo.csv", "", "", v) for v in ("1", "2", "3")]},
                    r"demo.csv: .*empty table \(.*header but no rows"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_spreadsheet_bad_input(tmp_path, name):
    data, keys, values, issues, strict_error = CASES[name]
    df, log = run(tmp_path / "lenient", data, **keys)
    assert len(df) == 3  # the scans are never lost to a bad spreadsheet
    for field, expected in values.items():
        assert [None if pd.isna(v) else v for v in df[field].tolist()] == expected, field
    assert {k: sorted(v) for k, v in problems(log).items()} == {k: sorted(v) for k, v in issues.items()}
    stored = "".join(str(v) for v in df.astype(str).to_numpy().ravel()) + "".join(
        str(i) for i in log.issues)
    assert "\ufffd" not in stored  # neither the table nor the issues report carries U+FFFD
    if strict_error is None:
        strict_df, _ = run(tmp_path / "strict", data, strict=True, **keys)
        assert strict_df["site"].tolist() == df["site"].tolist()
    else:
        with pytest.raises(HarmoniseError, match=strict_error):
            run(tmp_path / "strict", data, strict=True, **keys)


@pytest.mark.parametrize("keys,error", [({"encoding": "latin-9000"}, r"tables\[0\] \(demo\): encoding: unknown "
                                         r"encoding 'latin-9000'"),
                                        ({"sep": ";;"}, r"tables\[0\] \(demo\): sep must be one character")])
def test_mapping_encoding_and_sep_are_validated(tmp_path, keys, error):
    mapping, _ = cohort(tmp_path, b"", **keys)
    with pytest.raises(ValueError, match=error):
        load_cohort_mapping(mapping)


def test_ragged_row_names_file_and_separator(tmp_path):
    data = table(";").encode() + b"4;M;40;Bern;extra\n"
    with pytest.raises(HarmoniseError, match=r"demo.csv: cannot read clinical table \(separator ';'\)"):
        run(tmp_path, data)
