# preprocess stage rules (see workflow/rules/common.smk for paths and scan lists)
# Per scan: raw NIfTI -> N4 -> HD-BET -> SRI24 (T1: affine; T2/FLAIR/T1c: rigid to the session T1,
# composed, resampled once). The only declared output is the scan record (status ok|failed); the
# products it lists are written next to it. Bad data -> a "failed" record and exit 0, so the cohort
# goes on. Per cohort: all records -> QC table (Parquet + CSV + montage PNG).
import json

from braing3n.atlas import ATLAS_DIR as PREPROCESS_ATLAS_DIR, FILES as PREPROCESS_ATLAS_FILES

PREPROCESS_ATLAS = [str(PREPROCESS_ATLAS_DIR / f) for f in PREPROCESS_ATLAS_FILES.values()]
PREPROCESS_CFG = config.get("preprocess", {})
# a changed preprocess section (or seed) reruns every scan: params are part of Snakemake's rerun check
PREPROCESS_PARAMS = json.dumps({"preprocess": PREPROCESS_CFG, "seed": config.get("seed")}, sort_keys=True)


def preprocess_t1_record(wc):
    """The session's T1 record, or nothing when the session has no T1 (the job then records the failure)."""
    if (wc.cohort, wc.subject, wc.session, "T1") in SCAN_INDEX:
        return {"t1_record": L.scan_record(wc.cohort, wc.subject, wc.session, "T1")}
    return {}


def qc_records(wc):
    return [L.scan_record(s.cohort, s.subject, s.session, s.modality) for s in SCANS[wc.cohort]]


rule preprocess_t1:
    input:
        raw=lambda wc: raw_scan(wc, "T1"),
        atlas=PREPROCESS_ATLAS,
    output:
        record=L.scan_record("{cohort}", "{subject}", "{session}", "T1"),
    params:
        settings=PREPROCESS_PARAMS,
    log:
        f"{R}/logs/preprocess/{{cohort}}/sub-{{subject}}_ses-{{session}}_T1.log",
    group:
        "preprocess"
    threads: PREPROCESS_CFG.get("threads", 2)
    resources:
        mem_mb=6000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{BRAING3N} preprocess t1 {CONFIGFILES} --threads {{threads}} --raw {{input.raw}} "
        "--record {output.record} --cohort {wildcards.cohort} --subject {wildcards.subject} "
        "--session {wildcards.session} > {log} 2>&1"


rule preprocess_modality:
    input:
        unpack(preprocess_t1_record),
        raw=raw_scan,
        atlas=PREPROCESS_ATLAS,
    output:
        record=L.scan_record("{cohort}", "{subject}", "{session}", "{modality}"),
    wildcard_constraints:
        modality=r"T2|FLAIR|T1c",
    params:
        settings=PREPROCESS_PARAMS,
        t1=lambda wc, input: f"--t1-record {input.t1_record}" if "t1_record" in input.keys() else "",
    log:
        f"{R}/logs/preprocess/{{cohort}}/sub-{{subject}}_ses-{{session}}_{{modality}}.log",
    group:
        "preprocess"
    threads: PREPROCESS_CFG.get("threads", 2)
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{BRAING3N} preprocess modality {CONFIGFILES} --threads {{threads}} --raw {{input.raw}} "
        "{params.t1} --record {output.record} --cohort {wildcards.cohort} --subject {wildcards.subject} "
        "--session {wildcards.session} --modality {wildcards.modality} > {log} 2>&1"


rule qc_table:
    input:
        records=qc_records,
    output:
        table=L.qc_table("{cohort}"),
        csv=L.qc_table("{cohort}").replace(".parquet", ".csv"),
        montage=L.qc_table("{cohort}").replace(".parquet", "_montage.png"),
    params:
        settings=PREPROCESS_PARAMS,
    log:
        f"{R}/logs/preprocess/qc_table_{{cohort}}.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{BRAING3N} qc-table {CONFIGFILES} --cohort {{wildcards.cohort}} --out {{output.table}} "
        "--records {input.records} > {log} 2>&1"


ALL_TARGETS.extend(L.qc_table(c) for c in COHORTS)
