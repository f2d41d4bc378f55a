# tokenizer stage rules (see workflow/rules/common.smk for paths and scan lists)
# store: per cohort, the 160x192x160 float16 model-input store (+ index.parquet).
# train_mae / train_decoder: GPU jobs through the shared engine (resume from checkpoints on retry).
# export: per cohort, latents + pooled embeddings; reconstruct: L1/PSNR/SSIM on held-out scans + NIfTI.
import json

TRAIN = config["train"]
MAE_DIR = TRAIN["decoder"]["mae_dir"] or L.model_dir("mae")
DECODER_DIR = L.model_dir("decoder")
# the tokenizer that exports the latents, is scored, and decodes samples: the one trained here, or
# generate.tokenizer_dir (one trained elsewhere); one folder, so latents and decoder always match
TOKENIZER_DIR = model_dir_for(config, "decoder")


def _settings(*keys):
    """Config sections a rule depends on, for the params rerun trigger."""
    part = {k: results_only(TRAIN[k], f"train.{k}") for k in keys if k in TRAIN}
    return json.dumps(
        {"seed": config.get("seed"), "train": part, "store": results_only(config.get("store", {}), "store")},
        sort_keys=True,
    )


rule store:
    input:
        qc=L.qc_table("{cohort}"),
        metadata=L.metadata_partition("{cohort}"),
    output:
        L.store_index("{cohort}"),
    log:
        f"{R}/logs/store/{{cohort}}.log",
    conda:
        "../envs/cpu.yaml"
    threads: config["store"]["workers"]
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        settings=json.dumps(results_only(config.get("store", {}), "store"), sort_keys=True),
    shell:
        f"{BRAING3N} store {CONFIGFILES} --cohort {{wildcards.cohort:q}} --qc {{input.qc:q}} "
        "--metadata {input.metadata:q} --workers {threads} --out {output:q} > {log:q} 2>&1"


rule train_mae:
    input:
        stores=[L.store_index(c) for c in COHORTS],
        manifest=L.manifest,
    output:
        f"{L.model_dir('mae')}/final.safetensors",
    log:
        f"{R}/logs/train_mae.log",
    conda:
        "../envs/gpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=2880,
    params:
        out=L.model_dir("mae"),
        settings=_settings("engine", "mae"),
    shell:
        f"{LAUNCH} {BRAING3N} train mae {CONFIGFILES} --out {{params.out:q}} > {{log:q}} 2>&1" + KEEP_FAILED_LOG


rule train_decoder:
    input:
        stores=[L.store_index(c) for c in COHORTS],
        manifest=L.manifest,
        mae=f"{MAE_DIR}/final.safetensors",
    output:
        f"{DECODER_DIR}/final.safetensors",
    log:
        f"{R}/logs/train_decoder.log",
    conda:
        "../envs/gpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=1440,
    params:
        out=DECODER_DIR,
        settings=_settings("engine", "mae", "decoder"),
    shell:
        f"{LAUNCH} {BRAING3N} train decoder {CONFIGFILES} --out {{params.out:q}} > {{log:q}} 2>&1" + KEEP_FAILED_LOG


rule export:
    input:
        store=L.store_index("{cohort}"),
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
    output:
        f"{R}/embeddings/{{cohort}}.npz",
    log:
        f"{R}/logs/export/{{cohort}}.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    shell:
        f"{BRAING3N} export {CONFIGFILES} --cohort {{wildcards.cohort:q}} --model-dir {shlex.quote(TOKENIZER_DIR)} "
        "--out {output:q} > {log:q} 2>&1"


rule reconstruct:
    input:
        stores=[L.store_index(c) for c in COHORTS],
        manifest=L.manifest,
        tokenizer=f"{TOKENIZER_DIR}/final.safetensors",
    output:
        table=L.table("reconstruction"),
        summary=L.table("reconstruction_summary"),
    log:
        f"{R}/logs/reconstruct.log",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=_settings("decoder"),
    shell:
        f"{BRAING3N} reconstruct {CONFIGFILES} --model-dir {shlex.quote(TOKENIZER_DIR)} --nifti-dir {shlex.quote(R + '/reconstructions')} "
        "--out {output.table:q} > {log:q} 2>&1"


ALL_TARGETS.extend(f"{R}/embeddings/{c}.npz" for c in COHORTS)
ALL_TARGETS.append(L.table("reconstruction"))
