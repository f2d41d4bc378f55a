# preprocess stage rules (see workflow/rules/common.smk for paths and scan lists)
# One job per session: raw NIfTI -> N4 -> HD-BET -> SRI24, the T1 first (affine), then T2/FLAIR/T1c
# (rigid to the session's T1, composed, resampled once). The declared output is the session record;
# it lists one scan record per scan (status ok|failed), written next to it with the products. Bad
# data -> a "failed" scan record and exit 0, so the session's other scans and the cohort go on.
# A mapping's scans.skull_stripped / scans.space reach the CLI as --skull-stripped T1=yes --space T1=SRI24
# (quoted; preprocess/declared.py). Per cohort: all session records -> QC table (Parquet + CSV + montage PNG).
# Why per session and not per scan: every modality goes through its session's T1 anyway, and the
# DAG of a paper-sized run (35k scans -> 23k sessions) is a third smaller, so it builds in time.
import json
import shlex

from braing3n.atlas import ATLAS_DIR as PREPROCESS_ATLAS_DIR, FILES as PREPROCESS_ATLAS_FILES
from braing3n.metadata.discover import load_mapping
from braing3n.preprocess.declared import cli_flags, declared_inputs

PREPROCESS_ATLAS = [workdir_path(PREPROCESS_ATLAS_DIR / f) for f in PREPROCESS_ATLAS_FILES.values()]
PREPROCESS_CFG = config.get("preprocess", {})
# a changed preprocess setting (or seed) reruns every scan: params are part of Snakemake's rerun
# check; speed-only keys (threads, hdbet.device) are left out, and robust_z is read by qc_table only
_PREPROCESS_RESULTS = results_only(PREPROCESS_CFG, "preprocess")
PREPROCESS_PARAMS = json.dumps(
    {"preprocess": {k: v for k, v in _PREPROCESS_RESULTS.items() if k != "robust_z"}, "seed": config.get("seed")},
    sort_keys=True,
)
QC_TABLE_PARAMS = json.dumps({"robust_z": _PREPROCESS_RESULTS.get("robust_z")}, sort_keys=True)


def session_raws(wc):
    """The session's raw scans by modality, e.g. {"T1": path, "FLAIR": path}."""
    return SESSION_RAWS[(wc.cohort, wc.subject, wc.session)]


# what each cohort's mapping declares about its files (scans.skull_stripped, scans.space)
PREPROCESS_DECLARED = {
    c: declared_inputs(load_mapping(spec["mapping"])["scans"], spec["mapping"]) for c, spec in COHORTS.items()
}


def session_raw_args(wc):
    """--raw MODALITY=PATH per scan, then the mapping's declarations (--skull-stripped T1=yes ...)."""
    raws = session_raws(wc)
    words = [w for m, p in raws.items() for w in ("--raw", f"{m}={p}")]
    words += [w for m in raws for w in cli_flags(PREPROCESS_DECLARED[wc.cohort][m], m)]
    return " ".join(shlex.quote(str(w)) for w in words)


def session_runtime(wc, attempt):
    """Minutes: ~8 for the T1 and ~5 per other modality on 4 threads (`braing3n bench preprocess`),
    longer on each retry. Resource callables here rather than profile expressions: measured cheaper
    on the 35k-scan dry run (docs/slurm.md)."""
    return (8 + 5 * (len(session_raws(wc)) - 1)) * attempt


def qc_records(wc):
    return [L.session_record(wc.cohort, subject, session) for subject, session in sessions(wc.cohort)]


rule preprocess_session:
    input:
        unpack(session_raws),
        atlas=PREPROCESS_ATLAS,
    output:
        record=L.session_record("{cohort}", "{subject}", "{session}"),
    log:
        f"{R}/logs/preprocess/{{cohort}}/sub-{{subject}}_ses-{{session}}.log",
    group:
        "preprocess"
    conda:
        "../envs/cpu.yaml"
    threads: PREPROCESS_CFG.get("threads", 2)
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
        runtime=session_runtime,
    params:
        settings=PREPROCESS_PARAMS,
        raws=session_raw_args,
    shell:
        f"{BRAING3N} preprocess session {CONFIGFILES} --threads {{threads}} {{params.raws}} "
        "--record {output.record:q} --cohort {wildcards.cohort:q} --subject {wildcards.subject:q} "
        "--session {wildcards.session:q} > {log:q} 2>&1"


rule qc_table:
    input:
        records=qc_records,
    output:
        table=L.qc_table("{cohort}"),
        csv=L.qc_table("{cohort}").replace(".parquet", ".csv"),
        montage=L.qc_table("{cohort}").replace(".parquet", "_montage.png"),
    log:
        f"{R}/logs/preprocess/qc_table_{{cohort}}.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=QC_TABLE_PARAMS,
    shell:
        f"{BRAING3N} qc-table {CONFIGFILES} --cohort {{wildcards.cohort:q}} --out {{output.table:q}} "
        "--records {input.records:q} > {log:q} 2>&1"


ALL_TARGETS.extend(L.qc_table(c) for c in COHORTS)
