"""Pipeline configuration: load YAML, validate against the schema, fill defaults, hash.

The schema in ``workflow/schemas/config.schema.yaml`` is the single source of truth;
the Snakefile validates with ``snakemake.utils.validate`` and the CLI with this
module, so both see the same defaults.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import yaml

# Settings that change how fast or where a job runs, not what it computes. A training checkpoint
# may be resumed under other values of the train keys (train.engine.run_key leaves them out), and
# the workflow's params rerun trigger leaves them all out (workflow/rules/common.smk), so editing
# one reruns nothing. (Thread counts and bf16 move the last digits of a float result; a rerun
# would not make the old result wrong.)
SPEED_ONLY_TRAIN_KEYS = ("device", "bf16", "compile", "num_workers", "ckpt_every", "log_every", "keep_checkpoints")
SPEED_ONLY_KEYS = {"preprocess": ("threads",), "preprocess.hdbet": ("device",), "store": ("workers",),
                   "evaluate": ("batch_size",), "generate": ("batch_size",)}  # sampler: same seed, same latents

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


# the schema's pattern of every path-valued key (results, cohort roots and mappings, model folders,
# weights): no control characters, no braces; the rules quote the rest where it reaches a shell
PATH_PATTERN_HEAD = "^[^\\x00-\\x1f\\x7f{}]"


class ConfigError(ValueError):
    """A config file that does not match the schema."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict, source: str = "config", schema: dict | None = None) -> dict:
    """Validate in place, filling defaults; raise ConfigError naming the offending key."""
    schema = schema or load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        if e.validator == "pattern" and e.validator_value.startswith(PATH_PATTERN_HEAD):
            raise ConfigError(f"{source}: invalid config at '{where}': {e.instance!r} holds a control character "
                              "(newline, tab, ...) or a brace; a path may not (braces are Snakemake wildcards)")
        raise ConfigError(f"{source}: invalid config at '{where}': {e.message}")
    check_cross_keys(config, source)
    return config


def check_cross_keys(config: dict, source: str = "config") -> None:
    """Rules between keys that a schema cannot state; run at parse time (CLI and Snakefile) so a
    bad evaluate section fails before hours of training rather than at the stage reading it."""
    ev = config.get("evaluate") or {}
    g, fid = ev.get("guidance") or {}, ev.get("fid") or {}
    scales = [float(x) for x in g.get("scales") or []]
    if "cfg_scale" in fid and "scales" in g and float(fid["cfg_scale"]) not in scales:
        raise ConfigError(f"{source}: evaluate.fid.cfg_scale={fid['cfg_scale']} is not one of "
                          f"evaluate.guidance.scales {g['scales']}; FID and the sample mosaic use those samples")
    bottlenecks = (ev.get("tokenizers") or {}).get("bottlenecks")
    if "aekl" in (ev.get("baselines") or []) and not bottlenecks:
        raise ConfigError(f"{source}: evaluate.baselines holds aekl but evaluate.tokenizers.bottlenecks is empty; "
                          "the probed AutoencoderKL is one of those trained models")
    k = ((ev.get("encoders") or {}).get("aekl") or {}).get("bottleneck")
    if k is not None and bottlenecks and k not in bottlenecks:
        raise ConfigError(f"{source}: evaluate.encoders.aekl.bottleneck={k} is not one of "
                          f"evaluate.tokenizers.bottlenecks {bottlenecks} (the AutoencoderKL models trained)")
    ref, baselines = ev.get("reference_encoder", "mae"), ev.get("baselines") or []
    if ref != "mae" and ref not in baselines:
        raise ConfigError(f"{source}: evaluate.reference_encoder={ref!r} is neither mae nor one of "
                          f"evaluate.baselines {baselines}; the comparison table would be empty")
    # the generator trained here (an external one, generate.model_dir, is checked when loaded)
    external = (config.get("generate") or {}).get("model_dir")
    model = None if external else ((config.get("train") or {}).get("dit") or {}).get("conditions")
    asked = sorted((set(g.get("conditions") or {}) | set(g.get("fixed") or {})) - set(model or []))
    if model is not None and asked:
        raise ConfigError(f"{source}: evaluate.guidance asks for {asked}, which the generator does not take "
                          f"(train.dit.conditions: {model})")
    if "forecast" in ((config.get("generate") or {}).get("arms") or {}):
        raise ConfigError(f"{source}: generate.arms: 'forecast' is reserved ({{results}}/samples/forecast holds the "
                          "forecast demo's output); name the arm otherwise")
    both = sorted(set(g.get("fixed") or {}) & set(g.get("conditions") or {}))
    if both:
        raise ConfigError(f"{source}: evaluate.guidance: {both} both fixed and swept; a condition is either "
                          f"held (guidance.fixed) or requested at several values (guidance.conditions)")


def check_cohort(name: str, spec: dict, mapping: dict, scans: list, source: str = "config") -> None:
    """A real (not phantom) cohort that would give a run over nothing: its root missing, no file
    matching the mapping's scan pattern, none of its required clinical spreadsheets, or scans without any T1
    (every other modality is registered through its session's T1). Raised at parse time, before any
    job, as one line naming the cohort key. Phantom cohorts are written by their rule: not checked."""
    from braing3n.metadata.mapping import resolve_paths

    key, root = f"cohorts.{name}", Path(spec["root"])
    if not root.is_dir():
        raise ConfigError(f"{source}: {key}.root: {root} does not exist (or is not a folder); point it at the "
                          f"cohort's download or set {key}.enabled: false")
    if not scans:
        raise ConfigError(f"{source}: {key}: no file under {root} matches the scan pattern "
                          f"{mapping['scans']['pattern']!r} of {spec['mapping']}")
    tables = [t for t in mapping.get("tables") or [] if not t.get("optional")]  # optional: absent is no error
    if tables and not any(resolve_paths(root, t["path"]) for t in tables):
        wanted = ", ".join(str(p) for t in tables for p in (t["path"] if isinstance(t["path"], list) else [t["path"]]))
        raise ConfigError(f"{source}: {key}: none of the clinical spreadsheets of {spec['mapping']} is under "
                          f"{root} (looked for {wanted})")
    if not any(s.modality == "T1" for s in scans):
        found = sorted({s.modality for s in scans})
        raise ConfigError(f"{source}: {key}: {len(scans)} scans under {root} but no T1 in any session (found "
                          f"{', '.join(found)}); each session's other modalities are registered through its T1")


def aekl_bottleneck(evaluate: dict) -> int:
    """Latent channels of the AutoencoderKL probed as an encoder: evaluate.encoders.aekl.bottleneck,
    else the largest of evaluate.tokenizers.bottlenecks (the one that keeps the most information)."""
    k = ((evaluate.get("encoders") or {}).get("aekl") or {}).get("bottleneck")
    return int(k) if k is not None else int(max(evaluate["tokenizers"]["bottlenecks"]))


def load_config(path: str | os.PathLike) -> dict:
    """Read, validate and default-fill a pipeline config file."""
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_config(config, source=str(path))


def config_hash(config: dict, sections: list[str] | None = None) -> str:
    """Stable short hash of the whole config or of some sections (order-independent)."""
    part = config if sections is None else {k: config.get(k) for k in sections}
    blob = json.dumps(part, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_configs(paths: list[str]) -> dict:
    """Several ``--configfile`` YAMLs merged as Snakemake merges them (later wins, nested dicts
    merged), then validated with defaults. One path is just :func:`load_config`."""
    if len(paths) == 1:
        return load_config(paths[0])
    merged: dict = {}
    for path in paths:
        try:
            with open(path) as fh:
                merged = _merge(merged, yaml.safe_load(fh) or {})
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_config(merged, source=" + ".join(str(p) for p in paths))
