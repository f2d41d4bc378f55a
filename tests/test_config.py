import copy

import pytest
import yaml

from braing3n.config import REPO_ROOT, ConfigError, config_hash, load_config, validate_config


def _demo() -> dict:
    with open(REPO_ROOT / "config" / "demo.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("name", ["config/demo.yaml", "config/config.yaml"])
def test_shipped_configs_validate_and_get_defaults(name):
    cfg = load_config(REPO_ROOT / name)
    assert cfg["seed"] == 0
    for section in ("preprocess", "metadata", "store", "train", "generate", "evaluate", "report"):
        assert isinstance(cfg[section], dict)


def test_defaults_filled_for_missing_keys():
    cfg = {"cohorts": {"A": {"mapping": "m.yaml", "root": "/x"}}}
    validate_config(cfg)
    assert cfg["results"] == "results" and cfg["seed"] == 0 and cfg["device"] == "auto"
    assert cfg["cohorts"]["A"]["enabled"] is True


def test_unknown_key_is_rejected_by_name():
    cfg = _demo()
    cfg["preprocesss"] = {}
    with pytest.raises(ConfigError, match="preprocesss"):
        validate_config(cfg, source="demo.yaml")


def test_wrong_type_is_rejected_with_its_path():
    cfg = _demo()
    cfg["seed"] = "zero"
    with pytest.raises(ConfigError, match=r"demo.yaml: invalid config at 'seed'"):
        validate_config(cfg, source="demo.yaml")
    cfg = _demo()
    cfg["cohorts"]["bad-name!"] = {"mapping": "m", "root": "r"}
    with pytest.raises(ConfigError, match="bad-name!"):
        validate_config(cfg)


def test_snakemake_validate_rejects_bad_key_too():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = _demo()
    cfg["devise"] = "cpu"
    with pytest.raises(WorkflowError, match="devise"):
        validate(cfg, str(REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"))


def test_config_hash_is_stable_and_sensitive():
    a = _demo()
    b = copy.deepcopy(a)
    assert config_hash(a) == config_hash(b)
    b["seed"] = 1
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, ["preprocess"]) == config_hash(b, ["preprocess"])


def test_cross_key_rules_fail_at_parse_time_in_one_line():
    # fid's samples come from one guidance scale; a held condition cannot also be swept
    cfg = _demo()
    cfg.setdefault("evaluate", {}).setdefault("fid", {})["cfg_scale"] = 3
    with pytest.raises(ConfigError, match=r"^demo.yaml: evaluate.fid.cfg_scale=3 is not one of evaluate.guidance"):
        validate_config(cfg, source="demo.yaml")
    cfg = _demo()
    cfg["evaluate"]["guidance"].update(fixed={"sex": "F"}, conditions={"sex": ["F", "M"], "age": [60, 80]})
    with pytest.raises(ConfigError, match=r"\['sex'\] both fixed and swept") as err:
        validate_config(cfg)
    assert len(str(err.value).splitlines()) == 1  # Snakemake refuses it too: tests/test_workflow.py
    # the AutoencoderKL probed as a baseline is one of the trained bottlenecks (demo: 8 and 32)
    from braing3n.config import aekl_bottleneck

    cfg = _demo()
    cfg["evaluate"].update(baselines=["random_vit", "aekl"], encoders={"aekl": {"bottleneck": 16}})
    with pytest.raises(ConfigError, match=r"aekl.bottleneck=16 is not one of evaluate.tokenizers.bottlenecks \[8, 32"):
        validate_config(cfg)
    cfg["evaluate"]["encoders"]["aekl"]["bottleneck"] = 8
    assert aekl_bottleneck(validate_config(cfg)["evaluate"]) == 8
    cfg["evaluate"]["encoders"]["aekl"]["bottleneck"] = None
    assert aekl_bottleneck(validate_config(cfg)["evaluate"]) == 32  # the largest
    cfg["evaluate"]["tokenizers"]["bottlenecks"] = []
    with pytest.raises(ConfigError, match="baselines holds aekl but evaluate.tokenizers.bottlenecks is empty"):
        validate_config(cfg)


def test_gpu_overlay_changes_device_engine_and_mae_only():
    # make demo OVERLAY=config/demo_gpu.yaml: same cohorts, seeds and evaluation; a ViT-B MAE, bf16 and
    # loader workers for every model, CUDA; its own results folder (the CPU demo's results stay)
    from dataclasses import asdict

    from braing3n.config import load_configs
    from braing3n.train.engine import train_config

    cpu = load_config(REPO_ROOT / "config" / "demo.yaml")
    gpu = load_configs([str(REPO_ROOT / "config" / "demo.yaml"), str(REPO_ROOT / "config" / "demo_gpu.yaml")])
    assert (gpu["device"], gpu["results"]) == ("cuda", "results/demo_gpu")
    assert gpu["preprocess"]["hdbet"]["device"] == "cuda"
    for key in ("seed", "cohorts", "phantom", "metadata", "generate", "evaluate"):
        assert gpu[key] == cpu[key], key
    assert {k for k in gpu["preprocess"] if gpu["preprocess"][k] != cpu["preprocess"][k]} == {"threads", "hdbet"}
    for model in ("mae", "decoder", "dit", "dit_long", "aekl"):
        a, b = asdict(train_config(cpu, model)), asdict(train_config(gpu, model))
        changed = {k for k in a if a[k] != b[k]}
        schedule = {"steps", "batch_size", "lr", "warmup_steps", "ema_decay", "ckpt_every", "log_every", "extra"}
        expected = {"device", "bf16", "num_workers"} | (schedule if model == "mae" else set())
        assert changed == expected, (model, changed)
        assert gpu["train"][model] == cpu["train"][model] or model == "mae"  # model shapes: only the MAE's
    assert train_config(gpu, "mae").steps * train_config(gpu, "mae").batch_size == 32_000
    mae = gpu["train"]["mae"]
    assert (mae["preset"], mae["mask_ratio"]) == ("vitb", cpu["train"]["mae"]["mask_ratio"])


def test_misspelt_evaluate_names_are_refused_not_silently_skipped():
    # each of these used to validate and then drop a condition, an extractor or the whole comparison
    for edit, message in (
        (lambda ev: ev["guidance"]["conditions"].update(diseas="auto"), "diseas"),
        (lambda ev: ev.setdefault("encoders", {}).update(medicalnett={"weights": "w.pth"}), "medicalnett"),
        (lambda ev: ev["guidance"].update(fixed={"modalty": "T1"}), "modalty"),
        (lambda ev: ev.update(reference_encoder="maee"), "reference_encoder='maee' is neither mae nor one of"),
    ):
        cfg = _demo()
        edit(cfg["evaluate"])
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg)
    # an arm named like the forecast demo's folder would be overwritten by it
    cfg = _demo()
    cfg["generate"]["arms"]["forecast"] = {"disease": "AD"}
    with pytest.raises(ConfigError, match="'forecast' is reserved"):
        validate_config(cfg)
    # a condition name the schema knows but this generator was not trained with
    cfg = _demo()
    cfg["train"]["dit"]["conditions"] = ["disease", "sex", "modality"]
    cfg["evaluate"]["guidance"]["conditions"] = {"disease": "auto", "age": "auto"}
    with pytest.raises(ConfigError, match=r"asks for \['age'\], which the generator does not take"):
        validate_config(cfg)


# every path-valued key: (dotted key, setter on the demo config)
PATH_KEYS = {
    "results": lambda c, v: c.update(results=v),
    "cohorts.phantommem.root": lambda c, v: c["cohorts"]["phantommem"].update(root=v),
    "cohorts.phantommem.mapping": lambda c, v: c["cohorts"]["phantommem"].update(mapping=v),
    "preprocess.hdbet.v2_checkpoint": lambda c, v: c["preprocess"].setdefault("hdbet", {}).update(v2_checkpoint=v),
    "train.decoder.mae_dir": lambda c, v: c["train"]["decoder"].update(mae_dir=v),
    "generate.model_dir": lambda c, v: c["generate"].update(model_dir=v),
    "generate.long_model_dir": lambda c, v: c["generate"].update(long_model_dir=v),
    "generate.tokenizer_dir": lambda c, v: c["generate"].update(tokenizer_dir=v),
    "evaluate.probes_panel": lambda c, v: c["evaluate"].update(probes_panel=v),
    "evaluate.encoders.medicalnet.weights": lambda c, v: c["evaluate"].setdefault("encoders", {}).update(
        medicalnet={"weights": v}),
}


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
@pytest.mark.parametrize("bad", ["/x/a\nb", "/x/a\tb", "/x/a\rb", "/x/a\x1bb", "/x/{cohort}/b"])
def test_a_path_key_with_a_control_character_or_brace_is_one_line_naming_the_key(key, bad):
    # a newline would end a job's shell line; braces are Snakemake wildcards
    cfg = _demo()
    PATH_KEYS[key](cfg, bad)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"my.yaml: invalid config at '{key}': {bad!r} holds a control")


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
def test_a_path_key_with_shell_syntax_is_a_valid_literal_path(key):
    # quoted wherever it reaches a shell (tests/test_workflow.py runs jobs with such paths)
    cfg = _demo()
    odd = "/x/my results/a'b\"c $(touch x) `id`;d&&e|f"
    PATH_KEYS[key](cfg, odd)
    validate_config(cfg)
    where = cfg
    for part in key.split("."):
        where = where[part]
    assert where == odd


def test_a_cohort_name_that_is_not_a_label_is_refused():
    cfg = _demo()
    cfg["cohorts"]["a;b"] = cfg["cohorts"].pop("phantommem")
    with pytest.raises(ConfigError, match=r"invalid config at 'cohorts': 'a;b' does not match"):
        validate_config(cfg)
