"""One cohort's preprocessed tree as a BIDS-derivatives dataset (BIDS 1.9, "Derivatives").

`braing3n derivatives --configfile CFG --root results/preprocessed/C --cohort C --records ...`
(the raw root: ``--source``, else the config's ``cohorts.C.root``) writes, at the top of the tree:
- ``dataset_description.json``: DatasetType derivative, GeneratedBy (braing3n, its version, the
  git commits named by the session records), SourceDatasets (the raw root; its DOI when the raw
  root is itself a BIDS dataset that gives one);
- top-level sidecars that every scan inherits (BIDS inheritance principle): SkullStripped and
  SpatialReference (SRI24 is not one of BIDS's standard template spaces, so the validator requires it)
  of the atlas-space volumes and mask, SkullStripped of the native N4 head;
- ``.bidsignore``: the files BIDS has no name for (scan/session records, QC pictures, crash
  files, transforms: BIDS has no transform files yet).
Each file is written to a temp name and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from braing3n import __version__
from braing3n.paths import ATLAS_SPACE, BIDS_SUFFIX, SESSION_RECORD_SUFFIX

log = logging.getLogger("braing3n.derivatives")

BIDS_VERSION = "1.9.0"  # the newest release the installable validator (1.15, schema 0.11) knows
SRI24_URL = "https://www.nitrc.org/projects/sri24/"  # Rohlfing et al., Hum Brain Mapp 2010;31:798-819
BIDSIGNORE = ["*_qc.json", "*_qc.png", "*_crash.txt", f"*{SESSION_RECORD_SUFFIX}", "*_xfm.mat"]
_ATLAS = {"SpatialReference": SRI24_URL}


def sidecars() -> dict[str, dict]:
    """Top-level sidecar name -> content. No two apply to one file (BIDS forbids that at one level):
    the native brain mask gets none (its keys are only recommended)."""
    volume = {**_ATLAS, "SkullStripped": True,
              "Description": f"N4, HD-BET brain, affine to {ATLAS_SPACE} (other modalities through the "
                             "session's T1), 1 mm, negatives clipped"}
    out = {f"space-{ATLAS_SPACE}_{suffix}.json": volume for suffix in sorted(set(BIDS_SUFFIX.values()))}
    out[f"space-{ATLAS_SPACE}_desc-brain_mask.json"] = {**_ATLAS, "Type": "Brain",
                                                        "Description": "HD-BET brain mask in atlas space"}
    out["desc-n4_T1w.json"] = {"SkullStripped": False, "Description": "N4 bias-corrected head, native space"}
    return out


def top_files() -> list[str]:
    """Every file `write` puts at the dataset's top (the rule's outputs)."""
    return ["dataset_description.json", ".bidsignore", *sidecars()]


def _read(path: Path) -> dict:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable record ({exc})") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{path}: not a record (a JSON object)")
    return body


def generated_by(records: list[str]) -> list[dict]:
    """braing3n, its version and the git commits that wrote the scan records (sorted, distinct);
    ``records`` are session records (their scan records are read beside them) or scan records."""
    commits = set()
    for path in map(Path, records):
        body = _read(path)
        scans = [_read(path.parent / s["record"]) for s in body["scans"]] if "scans" in body else [body]
        commits.update(str(s["git_commit"]) for s in scans if s.get("git_commit"))
    if not commits:  # no record yet (a cohort of zero sessions is refused at parse time)
        from braing3n.provenance import git_commit

        commits = {git_commit()}
    return [{"Name": "braing3n", "Version": __version__,
             "Description": f"BrainG3N preprocessing; git commit {', '.join(sorted(commits))}"}]


def source_datasets(source: str) -> list[dict]:
    """The raw root as a file URL, with the DOI its own dataset_description.json gives (BIDS raw)."""
    root = Path(source).resolve()
    entry = {"URL": root.as_uri()}
    try:
        raw = json.loads((root / "dataset_description.json").read_text())
    except (OSError, ValueError):
        raw = {}
    if isinstance(raw, dict) and raw.get("DatasetDOI"):
        entry["DOI"] = str(raw["DatasetDOI"])
    return [entry]


def description(cohort: str, source: str | None, records: list[str]) -> dict:
    body = {"Name": f"BrainG3N preprocessing of {cohort}", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative", "GeneratedBy": generated_by(records)}
    if source:
        body["SourceDatasets"] = source_datasets(source)
    return body


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write(root: str | os.PathLike, cohort: str, source: str | None, records: list[str]) -> list[Path]:
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    files = {"dataset_description.json": description(cohort, source, records), **sidecars()}
    written = []
    for name, body in files.items():
        _write(out / name, json.dumps(body, indent=2) + "\n")
        written.append(out / name)
    _write(out / ".bidsignore", "".join(f"{p}\n" for p in BIDSIGNORE))
    return [*written, out / ".bidsignore"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braing3n derivatives", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="the cohort's preprocessed tree (results/preprocessed/C)")
    p.add_argument("--cohort", required=True)
    p.add_argument("--source", help="the cohort's raw root (SourceDatasets); default: cohorts.C.root of the config")
    p.add_argument("--configfile", action="append", default=[], help="pipeline config (later files win)")
    p.add_argument("--records", nargs="*", default=[], help="the cohort's session records (their git commits)")
    return p


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        source = args.source
        if source is None and args.configfile:
            from braing3n.config import load_configs

            cohorts = load_configs(args.configfile)["cohorts"]
            if args.cohort not in cohorts:
                raise ValueError(f"{', '.join(args.configfile)}: no cohort {args.cohort!r} "
                                 f"(cohorts: {', '.join(sorted(cohorts))})")
            source = cohorts[args.cohort]["root"]
        written = write(args.root, args.cohort, source, args.records)
    except (OSError, ValueError) as exc:
        print(f"braing3n derivatives: {exc}", file=sys.stderr)
        return 1
    log.info("wrote %d files at the top of %s", len(written), args.root)
    return 0
