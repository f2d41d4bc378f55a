# report stage rules (see workflow/rules/common.smk for paths and scan lists)
# report: every table and figure of the run in one self-contained HTML (`braing3n report`).
# Included last, so ALL_TARGETS already lists every other stage's products. `snakemake --report`
# builds Snakemake's own HTML from the report()-wrapped outputs of evaluate.smk as well.

# report_figures: the pictures that need the models (real | reconstruction | generated per arm on one
# window; real | reconstruction | error for held-out scans), drawn from the guidance samples
REPORT_FIGURES = [L.figure("samples_vs_real"), L.figure("reconstructions")]


rule report_figures:
    input:
        samples=EV_SAMPLES,
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        store=EV_STORE,
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
    output:
        samples=report(REPORT_FIGURES[0], category="Generation"),
        reconstructions=report(REPORT_FIGURES[1], category="Tokenizer"),
    log:
        f"{R}/logs/evaluate/figures.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        settings=_ev_settings("fid.cfg_scale", "fid.age_halfwidth", "guidance.fixed"),
    shell:
        "{BRAING3N} evaluate figures {EV_CONFIGFILES} --samples {input.samples:q} "
        "--out-samples {output.samples:q} --out-reconstructions {output.reconstructions:q} > {log:q} 2>&1"


ALL_TARGETS.extend(REPORT_FIGURES)

# report.needs: the products it waits for when only part of the pipeline is run; default all of them
_NEEDS = config.get("report", {}).get("needs")
REPORT_INPUTS = list(ALL_TARGETS) if _NEEDS is None else [f"{R}/{p}" for p in _NEEDS]


rule report:
    input:
        REPORT_INPUTS,
    output:
        html=report(f"{R}/report/index.html", category="Report"),
        check=f"{R}/report/honest_check.csv",
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=json.dumps(
            {"reference_encoder": EV.get("reference_encoder"), "report": config.get("report", {})},
            sort_keys=True,
            default=str,
        ),
    shell:
        "{BRAING3N} report {EV_CONFIGFILES} --out {output.html:q} > {log:q} 2>&1"


ALL_TARGETS.append(f"{R}/report/index.html")
