"""The canonical metadata schema: one row per scan, typed with pyarrow, checked with pandera.

``FIELDS`` is the single definition; the pyarrow schema, the pandera schema, the allowed
values used by the mapping step and the docs table are all derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow

MODALITIES = ("T1", "T2", "FLAIR", "T1c")
DIAGNOSES = ("HC", "MCI", "AD", "PD", "GBM", "glioma_other", "ASD", "ADHD", "SCZ", "paediatric_mixed")
TUMOUR_DIAGNOSES = ("GBM", "glioma_other")
SPLITS = ("train", "val", "test")
VENDORS = ("Siemens", "GE", "Philips", "Toshiba", "Hitachi", "other")
APOE_GENOTYPES = ("e2/e2", "e2/e3", "e2/e4", "e3/e3", "e3/e4", "e4/e4")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "str" | "float" | "int"
    description: str
    allowed: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    required: bool = False  # never null in a harmonised partition
    clinical: bool = False  # filled from the cohort's spreadsheets (counted in coverage)


FIELDS: tuple[Field, ...] = (
    Field("cohort", "str", "cohort name from the pipeline config", required=True),
    Field("subject_id", "str", "globally unique subject key `{cohort}:{raw subject id}`", required=True),
    Field("session_id", "str", "raw session / visit label as found in the file path", required=True),
    Field("scan_id", "str", "`{cohort}_sub-{subject}_ses-{session}_{modality}`: joins metadata, QC, store, "
          "embeddings", required=True),
    Field("subject_label", "str", "BIDS-safe subject label used in output paths", required=True),
    Field("session_label", "str", "BIDS-safe session label used in output paths", required=True),
    Field("modality", "str", "T1, T2, FLAIR or T1c", allowed=MODALITIES, required=True),
    Field("raw_path", "str", "raw NIfTI on disk", required=True),
    Field("age", "float", "age at this scan, years", lo=0, hi=120, clinical=True),
    Field("sex", "str", "F or M", allowed=("F", "M"), clinical=True),
    Field("diagnosis", "str", "harmonised diagnosis", allowed=DIAGNOSES, clinical=True),
    Field("cdr", "float", "CDR global score", allowed=(0.0, 0.5, 1.0, 2.0, 3.0), clinical=True),
    Field("cdr_sb", "float", "CDR sum of boxes", lo=0, hi=18, clinical=True),
    Field("mmse", "float", "Mini-Mental State Examination", lo=0, hi=30, clinical=True),
    Field("moca", "float", "Montreal Cognitive Assessment", lo=0, hi=30, clinical=True),
    Field("apoe", "str", "APOE genotype, alleles sorted (e3/e4)", allowed=APOE_GENOTYPES, clinical=True),
    Field("apoe_e4_count", "int", "number of APOE e4 alleles", lo=0, hi=2, clinical=True),
    Field("tumour_grade", "int", "WHO CNS grade", lo=1, hi=4, clinical=True),
    Field("idh1", "str", "IDH status", allowed=("mutant", "wildtype"), clinical=True),
    Field("mgmt", "str", "MGMT promoter status", allowed=("methylated", "unmethylated"), clinical=True),
    Field("site", "str", "acquisition site (cohort-scoped code)", clinical=True),
    Field("scanner_vendor", "str", "scanner manufacturer", allowed=VENDORS, clinical=True),
    Field("field_strength", "float", "field strength, tesla", lo=0.2, hi=11.7, clinical=True),
    Field("days_from_baseline", "float", "days since the subject's first session", lo=0, hi=36525, clinical=True),
    Field("split", "str", "train / val / test, per subject", allowed=SPLITS, required=True),
    Field("source_file", "str", "clinical file(s) the row's values came from", required=False),
    Field("source_row", "str", "1-based data row(s) in source_file (header excluded)", required=False),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
COLUMNS = [f.name for f in FIELDS]
CLINICAL = [f.name for f in FIELDS if f.clinical]

_ARROW = {"str": pa_arrow.string(), "float": pa_arrow.float64(), "int": pa_arrow.int64()}
ARROW_SCHEMA = pa_arrow.schema(
    [pa_arrow.field(f.name, _ARROW[f.kind], nullable=not f.required) for f in FIELDS]
)
_PANDAS = {"str": "string", "float": "float64", "int": "Int64"}


def _checks(f: Field) -> list[pa.Check]:
    checks = []
    if f.allowed is not None:
        checks.append(pa.Check.isin(list(f.allowed)))
    if f.lo is not None:
        checks.append(pa.Check.ge(f.lo))
    if f.hi is not None:
        checks.append(pa.Check.le(f.hi))
    return checks


PANDERA_SCHEMA = pa.DataFrameSchema(
    {f.name: pa.Column(_PANDAS[f.kind], checks=_checks(f), nullable=not f.required) for f in FIELDS},
    strict=True,
    ordered=True,
    unique=["scan_id"],
)


def check_value(name: str, value) -> str | None:
    """Why ``value`` is not allowed in field ``name`` (None when fine). Value already typed."""
    f = FIELD_BY_NAME[name]
    if f.allowed is not None and value not in f.allowed:
        return "unknown_code"
    if f.lo is not None and value < f.lo or f.hi is not None and value > f.hi:
        return "out_of_range"
    return None


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and pandas dtypes (missing columns become null)."""
    out = pd.DataFrame(index=df.index)
    for f in FIELDS:
        col = df[f.name] if f.name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)
        if f.kind == "float":
            col = pd.to_numeric(col, errors="raise").astype("float64")
        elif f.kind == "int":
            col = pd.to_numeric(col, errors="raise").astype("Int64")
        else:
            col = col.astype("string")
        out[f.name] = col
    return out.reset_index(drop=True)


def validate(df: pd.DataFrame, source: str = "metadata") -> pd.DataFrame:
    """Coerce and validate; raise ValueError naming the first failing column and value."""
    df = coerce(df)
    try:
        return PANDERA_SCHEMA.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        first = exc.failure_cases.iloc[0]
        raise ValueError(
            f"{source}: column {first['column']!r} fails {first['check']} at row {first['index']} "
            f"(value {first['failure_case']!r}); {len(exc.failure_cases)} failure(s) in all"
        ) from None


def to_arrow(df: pd.DataFrame) -> pa_arrow.Table:
    return pa_arrow.Table.from_pandas(coerce(df), schema=ARROW_SCHEMA, preserve_index=False)
