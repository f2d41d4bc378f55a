# generator stage rules (see workflow/rules/common.smk for paths and scan lists)
# train_dit / train_dit_long: flow-matching DiTs on the tokenizer latents (GPU jobs);
# generate_arm: samples per condition arm of config generate.arms; forecast_demo: one held-out baseline.

import json

GEN = config["generate"]
DIT_DIR = model_dir_for(config, "dit")  # generate.model_dir, else {results}/models/dit
DIT_LONG_DIR = model_dir_for(config, "dit_long")
# TOKENIZER_DIR: tokenizer.smk (export, reconstruct and sampling share it)
EMBEDDINGS = [f"{R}/embeddings/{c}.npz" for c in COHORTS]
DIT_LAUNCH = LAUNCH  # all GPUs of the allocation (DDP); defined in common.smk


def _gen_settings(*train_keys, arm=None):
    """Config a generator rule depends on (params rerun trigger)."""
    part = {
        "seed": config.get("seed"),
        "train": {k: results_only(config["train"].get(k), f"train.{k}") for k in train_keys},
    }
    if arm is not None:
        gen = results_only(GEN, "generate")
        part["generate"] = {k: v for k, v in gen.items() if k != "arms"} | {"arm": GEN["arms"].get(arm)}
    return json.dumps(part, sort_keys=True, default=str)


wildcard_constraints:
    arm="|".join(GEN["arms"]) or "NOARM",


rule train_dit:
    input:
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
    output:
        f"{DIT_DIR}/final.safetensors",
    log:
        f"{R}/logs/train_dit.log",
    conda:
        "../envs/gpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=2880,
    params:
        out=DIT_DIR,
        settings=_gen_settings("engine", "dit"),
    shell:
        f"{DIT_LAUNCH} {BRAING3N} train dit {CONFIGFILES} --out {{params.out:q}} > {{log:q}} 2>&1" + KEEP_FAILED_LOG


rule train_dit_long:
    input:
        embeddings=EMBEDDINGS,
        manifest=L.manifest,
        pairs=L.pairs,
    output:
        f"{DIT_LONG_DIR}/final.safetensors",
    log:
        f"{R}/logs/train_dit_long.log",
    conda:
        "../envs/gpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=1440,
    params:
        out=DIT_LONG_DIR,
        settings=_gen_settings("engine", "dit_long"),
    shell:
        f"{DIT_LAUNCH} {BRAING3N} train dit-long {CONFIGFILES} --out {{params.out:q}} > {{log:q}} 2>&1"
        + KEEP_FAILED_LOG


rule generate_arm:
    input:
        dit=f"{DIT_DIR}/final.safetensors",
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
    output:
        directory(f"{R}/samples/{{arm}}"),
    log:
        f"{R}/logs/generate_{{arm}}.log",
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        model=DIT_DIR,
        tokenizer=TOKENIZER_DIR,
        settings=lambda wc: _gen_settings(arm=wc.arm),
    shell:
        "{BRAING3N} generate {CONFIGFILES} --arm {wildcards.arm:q} --model-dir {params.model:q} "
        "--tokenizer-dir {params.tokenizer:q} --out {output:q} > {log:q} 2>&1"


rule forecast_demo:
    input:
        dit_long=f"{DIT_LONG_DIR}/final.safetensors",
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
        pairs=L.pairs,
        manifest=L.manifest,
    output:
        directory(f"{R}/samples/forecast"),
    log:
        f"{R}/logs/forecast_demo.log",
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        model=DIT_LONG_DIR,
        tokenizer=TOKENIZER_DIR,
        settings=_gen_settings(arm=None)
        + json.dumps({k: GEN[k] for k in ("forecast_years", "forecast_n", "steps", "solver")}),
    shell:
        "{BRAING3N} forecast {CONFIGFILES} --baseline auto --model-dir {params.model:q} "
        "--tokenizer-dir {params.tokenizer:q} --out {output:q} > {log:q} 2>&1"


ALL_TARGETS.extend(expand(f"{R}/samples/{{arm}}", arm=list(GEN["arms"])))
ALL_TARGETS.append(f"{R}/samples/forecast")
