# BrainG3N: raw brain MRI -> SRI24 atlas space -> MAE tokenizer -> flow-matching DiT -> reports.
#   snakemake --profile profiles/local --configfile config/demo.yaml all     (laptop / CI)
#   snakemake --profile profiles/slurm --configfile config/config.yaml all   (cluster)
# Rules are thin: each names inputs/outputs/resources/log and calls the `braing3n` CLI.
from snakemake.utils import min_version, validate

min_version("9.0")


# config/config.yaml is the default only: a --configfile replaces it (Snakemake's `configfile:`
# directive would merge the two, leaking the template's cohorts into e.g. the demo).
if not workflow.configfiles:
    import yaml

    with open("config/config.yaml") as _fh:
        config.update(yaml.safe_load(_fh))


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/phantom.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/metadata.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True
