"""The one `braing3n` entry point. Every Snakemake rule calls a subcommand here.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``;
modules are imported only when their command runs, so `braing3n --help` and the
light commands stay fast (torch is imported by the commands that need it).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Keep sorted by pipeline stage.
COMMANDS: dict[str, tuple[str, str]] = {
    "atlas": ("braing3n.atlas", "build or check the SRI24 atlas in resources/atlas"),
    "phantom": ("braing3n.phantom.cli", "synthesise a phantom cohort with ground truth"),
    "preprocess": ("braing3n.preprocess.cli", "N4 -> HD-BET -> SRI24 affine -> clip -> QC, per scan"),
    "derivatives": ("braing3n.preprocess.derivatives", "write a cohort's BIDS-derivatives dataset_description.json"),
    "qc-table": ("braing3n.preprocess.qc_table", "aggregate per-scan QC records into a cohort table"),
    "harmonise": ("braing3n.metadata.cli", "harmonise one cohort's metadata into the Parquet dataset"),
    "manifest": ("braing3n.metadata.manifest", "combine cohorts into the training manifest, pairs and summary"),
    "store": ("braing3n.data.store", "write the 160x192x160 model-input store for one cohort"),
    "train": ("braing3n.train.cli", "train a model (mae, decoder, dit, dit-long, aekl) with the shared engine"),
    "export": ("braing3n.tokenizer.export", "export latents and pooled embeddings for every scan"),
    "reconstruct": ("braing3n.tokenizer.reconstruct", "reconstruct scans to atlas-space NIfTI, score L1/PSNR/SSIM"),
    "generate": ("braing3n.generate.cli", "sample conditional volumes from the DiT"),
    "forecast": ("braing3n.generate.forecast", "forecast a follow-up scan from a baseline"),
    "evaluate": ("braing3n.evaluate.cli", "probes, encoder comparison, FID, guidance, memorisation, longitudinal"),
    "report": ("braing3n.report", "assemble tables and figures into the HTML report"),
    "bench": ("braing3n.bench", "benchmarks (preprocess, tokenizer, dit, dag); results written to files"),
}


def _usage() -> str:
    lines = ["usage: braing3n COMMAND [options]   (braing3n COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from braing3n import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"braing3n: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
