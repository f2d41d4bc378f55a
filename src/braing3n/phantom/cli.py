"""`braing3n phantom`: synthesise a phantom cohort (or rebuild the derived atlas tissues).

  braing3n phantom --configfile config/demo.yaml --cohort phantommem [--subjects 941_S_0022 ...]
  braing3n phantom tissues [--out resources/atlas]
"""

from __future__ import annotations

import argparse
import sys

import yaml

from braing3n.config import ConfigError, validate_config


def _merge(base: dict, extra: dict) -> dict:
    """Later config files override earlier ones key by key (as Snakemake does)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_configs(paths: list[str]) -> dict:
    config: dict = {}
    for path in paths:
        try:
            with open(path) as fh:
                config = _merge(config, yaml.safe_load(fh) or {})
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    return validate_config(config, source=" + ".join(paths))


def main(argv: list[str]) -> int:
    if argv and argv[0] == "tissues":
        from braing3n.phantom import tissues

        return tissues.main(argv[1:])
    p = argparse.ArgumentParser(prog="braing3n phantom", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", required=True, help="pipeline config (repeatable; later wins)")
    p.add_argument("--cohort", required=True, help="cohort name with a `phantom:` spec in the config")
    p.add_argument("--subjects", nargs="+", default=None, help="only these subjects (PTID/ID or label)")
    args = p.parse_args(argv)
    try:
        config = read_configs(args.configfile)
        spec = config["cohorts"].get(args.cohort)
        if spec is None or "phantom" not in spec:
            raise ValueError(f"{' + '.join(args.configfile)}: cohort {args.cohort!r} has no `phantom:` spec")
        from braing3n.phantom.generate import generate_cohort
        from braing3n.phantom.plan import plan_cohort

        plan = plan_cohort(args.cohort, spec, config)
        generate_cohort(plan, config, args.subjects, log=lambda msg: print(msg, flush=True))
    except (ConfigError, ValueError) as exc:
        print(f"braing3n phantom: {exc}", file=sys.stderr)
        return 1
    return 0
