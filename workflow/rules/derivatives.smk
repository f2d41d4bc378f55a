# Each cohort's preprocessed tree is a BIDS-derivatives dataset: dataset_description.json
# (GeneratedBy: braing3n, its version, the git commits of the scan records; SourceDatasets: the
# cohort's raw root from the config), the top-level sidecars its scans inherit, and a .bidsignore
# for the records, QC pictures, crash files and transforms (src/braing3n/preprocess/derivatives.py).
# Written once every session record of the cohort exists; rewritten when one changes.
from braing3n.preprocess.derivatives import top_files as derivatives_top_files


rule derivatives_description:
    input:
        records=qc_records,
    output:
        [f"{L.derivatives_root('{cohort}')}/{name}" for name in derivatives_top_files()],
    log:
        f"{R}/logs/preprocess/derivatives_{{cohort}}.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        root=lambda wc: L.derivatives_root(wc.cohort),
    shell:
        f"{BRAING3N} derivatives {CONFIGFILES} --root {{params.root:q}} --cohort {{wildcards.cohort:q}} "
        "--records {input.records:q} > {log:q} 2>&1"


ALL_TARGETS.extend(f"{L.derivatives_root(c)}/dataset_description.json" for c in COHORTS)
