# phantom cohort synthesis (demo/tests): `braing3n phantom` writes every planned file of a cohort
# (raw scans, clinical spreadsheet, ground truth). Snakemake outputs cannot be functions of a
# wildcard, so there is one rule per phantom cohort, `phantom_{cohort}`, with the plan's files
# (braing3n.phantom.plan.plan_cohort) as explicit outputs. A changed phantom spec reruns it (params).
import json

from braing3n.phantom.plan import plan_cohort
from braing3n.phantom.tissues import FILES as PHANTOM_TISSUE_FILES
from braing3n.atlas import ATLAS_DIR as PHANTOM_ATLAS_DIR, FILES as PHANTOM_ATLAS_FILES

PHANTOM_COHORTS = {c: plan_cohort(c, spec, config) for c, spec in COHORTS.items() if "phantom" in spec}
PHANTOM_INPUTS = [
    workdir_path(PHANTOM_ATLAS_DIR / f) for f in (*PHANTOM_ATLAS_FILES.values(), *PHANTOM_TISSUE_FILES.values())
]

for _cohort, _plan in PHANTOM_COHORTS.items():

    rule:
        name:
            f"phantom_{_cohort}"
        input:
            PHANTOM_INPUTS,
        output:
            _plan.files,
        log:
            f"{R}/logs/phantom/{_cohort}.log",
        conda:
            "../envs/cpu.yaml"
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            cohort=_cohort,
            spec=json.dumps(COHORTS[_cohort]["phantom"], sort_keys=True),
            shared=json.dumps(config.get("phantom", {}), sort_keys=True),
        shell:
            f"{BRAING3N} phantom {CONFIGFILES} --cohort {{params.cohort:q}} > {{log:q}} 2>&1"
