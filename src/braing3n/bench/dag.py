"""`braing3n bench dag`: `snakemake -n all` on a paper-sized synthetic setup (35,309 scans).

It writes, in a temporary folder, 18 cohorts laid out BIDS-style with empty placeholder NIfTIs
(4 modalities, longitudinal sessions), one mapping YAML and one participants.csv per cohort, and a
config pointing at them; then times the real workflow's dry run through the SLURM profile (same
groups as a cluster run) and records its peak memory, the number of jobs, and the number of SLURM
submissions (group jobs + ungrouped non-local jobs). Scan discovery (the parse-time glob of every
cohort) is timed on its own so a slow DAG can be attributed. Results: <out>/dag.csv and dag.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from braing3n.config import REPO_ROOT
from braing3n.provenance import provenance, write_table

PAPER_SCANS = 35_309
TOKENS = {"T1": "T1w", "T2": "T2w", "FLAIR": "FLAIR", "T1c": "ceT1w"}
PATTERN = "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_{modality}.nii.gz"


@dataclass(frozen=True)
class CohortShape:
    """Subjects, modalities per session, share of subjects with follow-ups, follow-up sessions range."""

    name: str
    subjects: int
    modalities: tuple[str, ...]
    p_long: float = 0.0
    sessions: tuple[int, int] = (2, 2)


# The paper's 18 cohorts, roughly shaped like them: ageing/PD cohorts longitudinal, development
# cohorts T1 (+T2), tumour cohorts four modalities. Scaled to PAPER_SCANS this gives ~15k subjects
# (paper 17.4k), ~4.8k with follow-ups (paper 6.6k) and ~23k sessions.
SHAPES = (
    CohortShape("adni", 2400, ("T1",), 0.85, (2, 3)),
    CohortShape("oasis3", 1300, ("T1", "FLAIR"), 0.6, (2, 3)),
    CohortShape("ppmi", 3300, ("T1",), 0.6, (2, 3)),
    CohortShape("aibl", 900, ("T1",), 0.6, (2, 3)),
    CohortShape("abide1", 1100, ("T1",)),
    CohortShape("abide2", 1000, ("T1",)),
    CohortShape("adhd200", 950, ("T1",)),
    CohortShape("hbn", 2100, ("T1",)),
    CohortShape("camcan", 650, ("T1", "T2")),
    CohortShape("ixi", 580, ("T1", "T2")),
    CohortShape("cobre", 150, ("T1",)),
    CohortShape("uclacnp", 270, ("T1",)),
    CohortShape("brats2021", 1250, ("T1", "T1c", "T2", "FLAIR")),
    CohortShape("upenngbm", 630, ("T1", "T1c", "T2", "FLAIR")),
    CohortShape("ucsfpdgm", 500, ("T1", "T1c", "T2", "FLAIR")),
    CohortShape("tcgagbm", 260, ("T1", "T1c", "T2", "FLAIR")),
    CohortShape("tcgalgg", 200, ("T1", "T1c", "T2", "FLAIR")),
    CohortShape("lumiere", 91, ("T1", "T1c", "T2", "FLAIR"), 1.0, (3, 10)))


def synth_scans(total: int = PAPER_SCANS, seed: int = 0, shapes=SHAPES) -> pd.DataFrame:
    """One row per scan (cohort, subject, session, modality), exactly ``total`` rows.

    Subject counts are scaled so the expected total matches; the last cross-sectional T1 cohort
    then gains or loses single-T1 subjects to hit ``total`` exactly.
    """
    rng = np.random.default_rng(seed)
    expected = sum(s.subjects * len(s.modalities) * (1 - s.p_long + s.p_long * np.mean(s.sessions)) for s in shapes)
    scale = total / expected
    rows: list[tuple[str, str, str, str]] = []
    for shape in shapes:
        for i in range(max(1, round(shape.subjects * scale))):
            n_ses = int(rng.integers(shape.sessions[0], shape.sessions[1] + 1)) if rng.random() < shape.p_long else 1
            for ses in range(1, n_ses + 1):
                rows += [(shape.name, f"{i + 1:05d}", f"{ses:02d}", m) for m in shape.modalities]
    filler = next(s.name for s in reversed(shapes) if s.modalities == ("T1",) and s.p_long == 0)
    df = pd.DataFrame(rows, columns=["cohort", "subject", "session", "modality"])
    if len(df) > total:  # trim the filler cohort first, then whole sessions' tails (T1 goes last)
        in_filler = df.index[df.cohort == filler]
        df = df.drop(in_filler[len(in_filler) - min(len(in_filler), len(df) - total):])
        df = df.iloc[:total]
    extra = total - len(df)
    if extra:
        start = max(df.loc[df.cohort == filler, "subject"].astype(int), default=0) + 1
        df = pd.concat([df, pd.DataFrame([(filler, f"{start + k:05d}", "01", "T1") for k in range(extra)],
                                         columns=df.columns)], ignore_index=True)
    return df.reset_index(drop=True)


def write_setup(scans: pd.DataFrame, root: Path, seed: int = 0) -> Path:
    """Placeholder files, mapping YAMLs, participants.csv per cohort and the config; returns the config."""
    rng = np.random.default_rng(seed + 1)
    cohorts = {}
    for cohort, df in scans.groupby("cohort", sort=False):
        croot = root / "raw" / cohort
        for r in df.itertuples():
            path = croot / PATTERN.format(subject=r.subject, session=r.session, modality=TOKENS[r.modality])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        visits = df[["subject", "session"]].drop_duplicates()
        pd.DataFrame({
            "participant_id": "sub-" + visits.subject, "session_id": "ses-" + visits.session,
            "age": rng.uniform(5, 98, len(visits)).round(1), "sex": rng.choice(["M", "F"], len(visits)),
            "diagnosis": "HC"}).to_csv(croot / "participants.csv", index=False)
        mapping = {
            "description": f"synthetic {cohort}-shaped cohort for the DAG benchmark (empty placeholder files)",
            "scans": {"pattern": PATTERN, "modalities": {TOKENS[m]: m for m in sorted(df.modality.unique())}},
            "tables": [{"name": "demo", "path": "participants.csv",
                        "subject": {"column": "participant_id", "regex": "sub-(.+)"},
                        "session": {"column": "session_id", "regex": "ses-(.+)"}}],
            "fields": {"age": {"column": "age"}, "sex": {"column": "sex"}, "diagnosis": {"column": "diagnosis"}},
        }
        mpath = root / "cohorts" / f"{cohort}.yaml"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(yaml.safe_dump(mapping, sort_keys=False))
        cohorts[cohort] = {"mapping": str(mpath), "root": str(croot)}
    config = {"results": str(root / "results"), "seed": seed, "device": "cpu", "cohorts": cohorts}
    cpath = root / "config.yaml"
    cpath.write_text(yaml.safe_dump(config, sort_keys=False))
    return cpath


def time_discovery(config_path: Path) -> tuple[float, int]:
    """Seconds to discover every cohort's scans (the Snakefile's parse-time glob), and the count."""
    from braing3n.metadata.discover import discover_scans, load_mapping

    config = yaml.safe_load(config_path.read_text())
    t0 = time.perf_counter()
    n = sum(len(discover_scans(c, load_mapping(s["mapping"]), s["root"], duplicates=[]))
            for c, s in config["cohorts"].items() if s.get("enabled", True))
    return time.perf_counter() - t0, n


_GROUP = re.compile(r"^\[[^\]]+\] Group job (\S+)", re.M)
_RULE = re.compile(r"^(local)?rule (\S+):", re.M)


def parse_dryrun(text: str) -> dict:
    """Jobs per rule (the 'Job stats' table) and SLURM submissions from a dry run's log.

    Group members are printed indented under their 'Group job' line; top-level 'rule X:' blocks
    are jobs submitted on their own, 'localrule X:' blocks run in the main process.
    """
    stats = text.split("Job stats:", 1)
    if len(stats) < 2:
        raise ValueError("dry run printed no 'Job stats' table (did it fail?)")
    per_rule = {}
    for line in stats[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        per_rule[parts[0]] = int(parts[1])
    total = per_rule.pop("total", sum(per_rule.values()))
    groups = _GROUP.findall(text)
    top = _RULE.findall(text)
    return {"jobs": total, "per_rule": per_rule, "group_jobs": len(groups),
            "submissions": len(groups) + sum(1 for local, _ in top if not local),
            "local_jobs": sum(1 for local, _ in top if local)}


def run_dryrun(config_path: Path, profile: str, log_path: Path, timeout: int) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak RSS (MB) and output of `snakemake -n all` run in a child process.

    CPU seconds (user + system) are what the wall time would be on an idle core: on a shared
    machine the wall clock also counts waiting for the CPU."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), *(["--profile", profile] if profile else []),
           "--configfile", str(config_path), "-n", "all"]
    if not Path(cmd[0]).exists():
        cmd[0] = shutil.which("snakemake") or "snakemake"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak = after.ru_maxrss
    text = res.stdout + res.stderr
    log_path.write_text(text)
    if res.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"snakemake -n all failed (exit {res.returncode}); full log {log_path}:\n{tail}")
    if peak <= before.ru_maxrss:  # an earlier, larger child set the high-water mark: cannot attribute it
        peak = float("nan")
    return wall, cpu, peak / 1024.0, text


def time_scontrol() -> float:
    """Wall seconds of `scontrol show config` (NaN without scontrol). The SLURM executor plugin
    runs it when snakemake imports the plugin (10 s timeout), so where scontrol is installed but
    no controller answers, every dry run waits that long without using the CPU."""
    exe = shutil.which("scontrol")
    if exe is None:
        return float("nan")
    t0 = time.perf_counter()
    try:
        subprocess.run([exe, "show", "config"], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pass
    return time.perf_counter() - t0


def write_results(rows: list[tuple[str, object, str]], out: Path, prov: dict) -> pd.DataFrame:
    """<out>/dag.csv and dag.md from (metric, value, note) rows; returns the table.

    Values are written as text: counts stay integers, timings keep two decimals. The Markdown is
    written here with number parsing off: tabulate would print the count 35309 as 3.531e+04."""
    rows = [(m, str(v) if isinstance(v, (int, np.integer)) else f"{v:.2f}", note) for m, v, note in rows]
    table = pd.DataFrame(rows, columns=["metric", "value", "note"])
    write_table(table, out / "dag.csv", prov, markdown=False)
    md = [table.to_markdown(index=False, disable_numparse=True), "",
          "Provenance: " + ", ".join(f"{k}={v}" for k, v in prov.items() if k != "packages"), "",
          f"Packages: {prov.get('packages', '')}", ""]
    tmp = out / "dag.md.tmp"
    tmp.write_text("\n".join(md))
    tmp.replace(out / "dag.md")
    return table


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench dag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench", help="folder for dag.csv / dag.md / dag_dryrun.log")
    p.add_argument("--scans", type=int, default=PAPER_SCANS, help="number of synthetic scans")
    p.add_argument("--profile", default="profiles/slurm", help="profile whose groups are counted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=1800, help="seconds before the dry run is abandoned")
    p.add_argument("--keep", default=None, help="write the synthetic setup here and keep it (default: temp dir)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="braing3n-dag-"))
    try:
        t0 = time.perf_counter()
        scans = synth_scans(args.scans, args.seed)
        config_path = write_setup(scans, tmp, args.seed)
        setup_s = time.perf_counter() - t0
        discover_s, found = time_discovery(config_path)
        if found != len(scans):
            raise RuntimeError(f"discovery found {found} scans, the synthetic setup has {len(scans)}")
        wall, cpu, peak_mb, text = run_dryrun(config_path, args.profile, out / "dag_dryrun.log", args.timeout)
        # the same without a profile (no SLURM resources or groups to evaluate), for comparison
        plain_wall, plain_cpu, _, _ = run_dryrun(config_path, "", out / "dag_dryrun_plain.log", args.timeout)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"braing3n bench dag: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    dag = parse_dryrun(text)
    sessions = scans[["cohort", "subject", "session"]].drop_duplicates()
    per_subject = sessions.groupby(["cohort", "subject"]).size()
    rows = [
        ("scans", len(scans), ""), ("cohorts", scans.cohort.nunique(), ""),
        ("subjects", len(per_subject), ""), ("longitudinal_subjects", int((per_subject > 1).sum()), ""),
        ("sessions", len(sessions), ""),
        *[(f"scans_{m}", int((scans.modality == m).sum()), "") for m in TOKENS],
        ("setup_seconds", round(setup_s, 2), "write placeholders, mappings, CSVs"),
        ("discover_seconds", round(discover_s, 2), "parse-time glob of all cohorts, in-process"),
        ("dryrun_seconds", round(wall, 2), f"snakemake --profile {args.profile} -n all, wall clock (goal < 60)"),
        ("dryrun_cpu_seconds", round(cpu, 2), "user + system CPU of the dry run (= wall on an idle core)"),
        ("dryrun_peak_rss_mb", round(peak_mb, 1), "max resident memory of the dry run"),
        ("scontrol_wait_seconds", round(time_scontrol(), 2),
         "`scontrol show config`, run by the SLURM plugin at import: part of the wall clock, no CPU"),
        ("dryrun_plain_seconds", round(plain_wall, 2), "snakemake -n all without a profile, wall clock"),
        ("dryrun_plain_cpu_seconds", round(plain_cpu, 2), "same, user + system CPU"),
        ("jobs", dag["jobs"], "jobs in the DAG"),
        *[(f"jobs_{rule}", n, "") for rule, n in sorted(dag["per_rule"].items())],
        ("group_jobs", dag["group_jobs"], f"grouped submissions with {args.profile}"),
        ("slurm_submissions", dag["submissions"], "group jobs + ungrouped non-local jobs"),
        ("local_jobs", dag["local_jobs"], "run in the main snakemake process"),
    ]
    prov = provenance(None, seed=args.seed, scans=len(scans))
    prov.update(profile=args.profile, cpus=len(os.sched_getaffinity(0)))
    table = write_results(rows, out, prov)
    print(table.to_string(index=False))
    print(f"braing3n bench dag: wrote {out / 'dag.csv'} and {out / 'dag.md'}")
    return 0
