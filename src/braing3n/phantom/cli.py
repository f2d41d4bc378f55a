"""`braing3n phantom`: synthesise a phantom cohort (or rebuild the derived atlas tissues).

  braing3n phantom --configfile config/demo.yaml --cohort phantommem [--subjects 941_S_0022 ...]
  braing3n phantom tissues [--out resources/atlas]
"""

from __future__ import annotations

import argparse
import sys

from braing3n.config import ConfigError, load_configs


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
        config = load_configs(args.configfile)
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
