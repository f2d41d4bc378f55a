# metadata stage rules (see workflow/rules/common.smk for paths and scan lists)
# harmonise: one cohort's scans + clinical tables -> its Parquet partition + issues report.
# manifest: all partitions -> training manifest, longitudinal pairs, dataset summary/coverage.
import json

from braing3n.metadata.discover import mapping_path
from braing3n.metadata.mapping import clinical_files, load_cohort_mapping

METADATA_ISSUES = R + "/metadata/issues/{cohort}.csv"


def metadata_inputs(wc):
    spec = COHORTS[wc.cohort]
    mapping = load_cohort_mapping(spec["mapping"])
    return {
        "mapping": mapping_path(spec["mapping"]),  # `mapping: bids` = config/cohorts/bids.yaml
        "scans": [s.path for s in SCANS[wc.cohort]],
        # phantom cohorts: the spreadsheet the phantom rule will write; real cohorts: files on disk
        "clinical": clinical_files(mapping, spec["root"], declared="phantom" in spec),
    }


rule harmonise:
    input:
        unpack(metadata_inputs),
    output:
        partition=L.metadata_partition("{cohort}"),
        issues=METADATA_ISSUES,
    log:
        f"{R}/logs/metadata/harmonise_{{cohort}}.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=json.dumps({"metadata": config.get("metadata", {}), "seed": config.get("seed")}, sort_keys=True),
    shell:
        f"{BRAING3N} harmonise {CONFIGFILES} --cohort {{wildcards.cohort:q}} "
        "--out {output.partition:q} --issues {output.issues:q} > {log:q} 2>&1"


rule manifest:
    input:
        partitions=expand(L.metadata_partition("{cohort}"), cohort=sorted(COHORTS)),
    output:
        manifest=L.manifest,
        pairs=L.pairs,
        summary=L.table("dataset_summary"),
        summary_md=L.table("dataset_summary").replace(".csv", ".md"),
        coverage=L.table("dataset_coverage"),
        coverage_md=L.table("dataset_coverage").replace(".csv", ".md"),
    log:
        f"{R}/logs/metadata/manifest.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        f"{BRAING3N} manifest {CONFIGFILES} --partitions {{input.partitions:q}} --manifest {{output.manifest:q}} "
        "--pairs {output.pairs:q} --summary {output.summary:q} --coverage {output.coverage:q} > {log:q} 2>&1"


ALL_TARGETS += [L.manifest, L.pairs, L.table("dataset_summary"), L.table("dataset_coverage")]
