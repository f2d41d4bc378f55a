# evaluate stage rules (see workflow/rules/common.smk for paths and scan lists)
# embed_baseline: pooled embeddings of a baseline encoder (random ViT floor, user-supplied externals)
# probes -> compare: linear-probe panel per encoder, paired-bootstrap comparison, bar chart
# guidance -> fid, memorisation: CFG sweep samples scored by real-data probes, decomposed FID, near-copies
# longitudinal: dit-long forecasts vs actual follow-up; train_aekl -> tokenizers: MAE vs AutoencoderKL
# Model folders (DIT_DIR, DIT_LONG_DIR, TOKENIZER_DIR) and EMBEDDINGS come from generator.smk.

from braing3n.config import aekl_bottleneck

EV = config["evaluate"]
EV_ENCODERS = ["mae", *EV["baselines"]]
EV_BOTTLENECKS = list(EV["tokenizers"]["bottlenecks"])
EV_CONFIGFILES = CONFIGFILES or "--configfile config/config.yaml"
EV_STORE = [L.store_index(c) for c in sorted(COHORTS)]
EV_SAMPLES = f"{R}/evaluation/guidance_samples.npz"


def _ev_settings(*keys):
    """Evaluate settings a rule reads ("fid.cfg_scale" names a sub-key), for the params rerun trigger:
    an edited key reruns only the stages that read it (guidance.n_per_value: guidance and what reads
    its samples, not the probes)."""
    part = {"seed": config.get("seed")}
    for key in keys:
        value = EV
        for k in key.split("."):
            value = value.get(k) if isinstance(value, dict) else None
        part[key] = value
    return json.dumps(part, sort_keys=True, default=str)


wildcard_constraints:
    encoder=r"[a-z_]+",
    k=r"\d+",


def baseline_model(wc):
    """The model a baseline encoder reads: the trained AutoencoderKL for aekl; random_vit copies
    the MAE architecture (and external encoders need no pipeline model) from the tokenizer."""
    if wc.encoder == "aekl":
        return f"{R}/models/aekl_{aekl_bottleneck(EV)}/final.safetensors"
    return f"{TOKENIZER_DIR}/final.safetensors"


def encoder_weights(name):
    """An external encoder's weight file (the user's own): an input, so replacing it reruns its jobs."""
    weights = (EV.get("encoders", {}).get(name) or {}).get("weights")
    return [weights] if weights else []


def encoder_embeddings(wc):
    if wc.encoder == "mae":
        return EMBEDDINGS
    return [f"{R}/embeddings/{wc.encoder}/{c}.npz" for c in sorted(COHORTS)]


rule embed_baseline:
    input:
        store=lambda wc: L.store_index(wc.cohort),
        model=baseline_model,
        weights=lambda wc: encoder_weights(wc.encoder),
    output:
        f"{R}/embeddings/{{encoder}}/{{cohort}}.npz",
    log:
        f"{R}/logs/evaluate/embed_{{encoder}}_{{cohort}}.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        # (evaluate.batch_size is left out: it changes speed, not the embeddings)
        settings=lambda wc: _ev_settings(f"encoders.{wc.encoder}")
        + (f" aekl_{aekl_bottleneck(EV)}" if wc.encoder == "aekl" else ""),
    shell:
        "{BRAING3N} evaluate embed {EV_CONFIGFILES} --encoder {wildcards.encoder:q} --cohort {wildcards.cohort:q} "
        "--out {output:q} > {log:q} 2>&1"


rule probes:
    input:
        embeddings=encoder_embeddings,
        manifest=L.manifest,
        panel=EV["probes_panel"],
    output:
        table=L.table("probes_{encoder}"),
        predictions=f"{R}/tables/probe_predictions_{{encoder}}.parquet",
    log:
        f"{R}/logs/evaluate/probes_{{encoder}}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        settings=_ev_settings("n_splits", "n_boot"),
    shell:
        "{BRAING3N} evaluate probes {EV_CONFIGFILES} --encoder {wildcards.encoder:q} "
        "--embeddings {input.embeddings:q} --out {output.table:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule compare_encoders:
    input:
        predictions=expand(f"{R}/tables/probe_predictions_{{encoder}}.parquet", encoder=EV_ENCODERS),
        tables=expand(L.table("probes_{encoder}"), encoder=EV_ENCODERS),
    output:
        table=report(L.table("encoder_comparison"), category="Linear probes"),
        summary=report(L.table("encoder_summary"), category="Linear probes"),
        figure=report(L.figure("probes"), category="Linear probes"),
    log:
        f"{R}/logs/evaluate/compare.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=_ev_settings("n_boot", "reference_encoder"),
        reference=EV["reference_encoder"],
    shell:
        "{BRAING3N} evaluate compare {EV_CONFIGFILES} --reference {params.reference:q} "
        "--predictions {input.predictions:q} --probe-tables {input.tables:q} --out {output.table:q} "
        "--summary {output.summary:q} --figure {output.figure:q} > {log:q} 2>&1"


rule guidance:
    input:
        dit=f"{DIT_DIR}/final.safetensors",
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
    output:
        table=report(L.table("guidance"), category="Generation"),
        figure=report(L.figure("guidance"), category="Generation"),
        mosaic=report(L.figure("samples_by_condition"), category="Generation"),
        samples=EV_SAMPLES,
    log:
        f"{R}/logs/evaluate/guidance.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=_ev_settings("guidance", "fid.cfg_scale", "fid.age_halfwidth", "n_splits"),
    shell:
        "{BRAING3N} evaluate guidance {EV_CONFIGFILES} --out {output.table:q} --figure {output.figure:q} "
        "--samples {output.samples:q} --mosaic {output.mosaic:q} > {log:q} 2>&1"


rule fid:
    input:
        samples=EV_SAMPLES,
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        store=EV_STORE,
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
        # the MedicalNet weights when FID extracts with them (extractor auto or medicalnet)
        medicalnet=encoder_weights("medicalnet") if EV["fid"].get("extractor", "auto") != "mae" else [],
    output:
        report(L.table("fid"), category="Generation"),
    log:
        f"{R}/logs/evaluate/fid.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=_ev_settings("fid", "encoders.medicalnet"),
    shell:
        "{BRAING3N} evaluate fid {EV_CONFIGFILES} --samples {input.samples:q} --out {output:q} > {log:q} 2>&1"


rule memorisation:
    input:
        samples=EV_SAMPLES,
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
    output:
        table=report(L.table("memorisation"), category="Generation"),
        per_sample=L.table("memorisation_samples"),
    log:
        f"{R}/logs/evaluate/memorisation.log",
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        settings=_ev_settings("memorisation", "guidance.latent_pool", "guidance.fixed", "fid.age_halfwidth"),
    shell:
        "{BRAING3N} evaluate memorisation {EV_CONFIGFILES} --samples {input.samples:q} --out {output.table:q} "
        "--per-sample {output.per_sample:q} > {log:q} 2>&1"


rule longitudinal:
    input:
        dit_long=f"{DIT_LONG_DIR}/final.safetensors",
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
        pairs=L.pairs,
    output:
        table=report(L.table("longitudinal"), category="Longitudinal"),
        per_pair=L.table("longitudinal_pairs"),
    log:
        f"{R}/logs/evaluate/longitudinal.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=_ev_settings("longitudinal", "guidance.solver", "guidance.latent_pool"),
    shell:
        "{BRAING3N} evaluate longitudinal {EV_CONFIGFILES} --out {output.table:q} --per-pair {output.per_pair:q} "
        "> {log:q} 2>&1"


rule train_aekl:
    input:
        store=EV_STORE,
        manifest=L.manifest,
    output:
        weights=f"{R}/models/aekl_{{k}}/final.safetensors",
        overlay=f"{R}/models/aekl_{{k}}/bottleneck.yaml",
    log:
        f"{R}/logs/train_aekl_{{k}}.log",
    conda:
        "../envs/gpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=1440,
    params:
        out=f"{R}/models/aekl_{{k}}",
        settings=_settings("engine", "aekl"),
    shell:
        # the bottleneck size reaches the train CLI as a one-key config overlay (later --configfile wins)
        "printf 'train:\\n  aekl:\\n    latent_channels: {wildcards.k}\\n' > {output.overlay:q} && "
        "{LAUNCH} {BRAING3N} train aekl {EV_CONFIGFILES} --configfile {output.overlay:q} --out {params.out:q} > {log:q} 2>&1"
        + KEEP_FAILED_LOG


rule tokenizers:
    input:
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        aekl=expand(f"{R}/models/aekl_{{k}}/final.safetensors", k=EV_BOTTLENECKS),
        panel=EV["probes_panel"],
        store=EV_STORE,
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
    output:
        report(L.table("tokenizers"), category="Tokenizer"),
    log:
        f"{R}/logs/evaluate/tokenizers.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        aekl=[f"{R}/models/aekl_{k}" for k in EV_BOTTLENECKS],
        settings=_ev_settings("tokenizers", "n_splits", "n_boot", "guidance.latent_pool"),
        eval_split=config["train"].get("decoder", {}).get("eval_split", "test"),  # the scans reconstruct scores
    shell:
        "{BRAING3N} evaluate tokenizers {EV_CONFIGFILES} --aekl {params.aekl:q} --out {output:q} > {log:q} 2>&1"


EVALUATE_TARGETS = [
    L.table("encoder_comparison"),
    L.table("guidance"),
    L.table("fid"),
    L.table("memorisation"),
    L.table("longitudinal"),
    L.table("tokenizers"),
]
ALL_TARGETS.extend(EVALUATE_TARGETS)
