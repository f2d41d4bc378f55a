# report stage rules (see workflow/rules/common.smk for paths and scan lists)
# report: every table and figure of the run in one self-contained HTML (`braing3n report`).
# Included last, so ALL_TARGETS already lists every other stage's products. `snakemake --report`
# builds Snakemake's own HTML from the report()-wrapped outputs of evaluate.smk as well.

# report.needs: the products it waits for when only part of the pipeline is run; default all of them
_NEEDS = config.get("report", {}).get("needs")
REPORT_INPUTS = list(ALL_TARGETS) if _NEEDS is None else [f"{R}/{p}" for p in _NEEDS]


rule report:
    input:
        REPORT_INPUTS,
    output:
        html=report(f"{R}/report/index.html", category="Report"),
        check=f"{R}/report/honest_check.csv",
    params:
        settings=json.dumps({"reference_encoder": EV.get("reference_encoder"), "report": config.get("report", {})},
                            sort_keys=True, default=str),
    log:
        f"{R}/logs/report.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        "{BRAING3N} report {EV_CONFIGFILES} --out {output.html:q} > {log:q} 2>&1"


ALL_TARGETS.append(f"{R}/report/index.html")
