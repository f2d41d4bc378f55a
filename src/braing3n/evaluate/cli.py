"""`braing3n evaluate SUB --configfile CFG ...`: the evaluation stage, one subcommand per report.

    embed         pooled embeddings of a baseline encoder (random_vit, brainiac, ...) for one cohort
    probes        the probe panel for one encoder -> tables/probes_{encoder}.csv + predictions
    compare       encoders in one table, paired-bootstrap win/tie/loss, summary line, bar chart
    guidance      CFG-scale sweep (samples reused by fid and memorisation), curves, sample mosaic
    fid           decomposed 3D-FID per conditioning arm
    memorisation  nearest-training-scan distances of generated samples vs held-out scans
    longitudinal  dit-long forecasts vs actual follow-up, age progression, change localisation
    tokenizers    MAE tokenizer vs AutoencoderKL bottlenecks (reconstruction + tumour probes)
    figures       the report's pictures: real | reconstruction | generated per arm on one window,
                  real | reconstruction | error for held-out scans
"""

from __future__ import annotations

import argparse
import sys

from braing3n.config import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braing3n evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sub", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_)
        s.add_argument("--configfile", action="append", required=True, help="pipeline config (repeatable)")
        return s

    s = add("embed", "pooled embeddings of a baseline encoder for one cohort")
    s.add_argument("--encoder", required=True)
    s.add_argument("--cohort", required=True)
    s.add_argument("--out", required=True, help="output .npz (scan_id, cls?, mean, ...)")
    s = add("probes", "linear-probe panel for one encoder")
    s.add_argument("--encoder", required=True)
    s.add_argument("--embeddings", nargs="+", required=True, help="per-cohort .npz files")
    s.add_argument("--out", required=True, help="metrics table (.csv; .md + provenance alongside)")
    s.add_argument("--predictions", required=True, help="out-of-fold predictions (.parquet)")
    s = add("compare", "encoder comparison by paired bootstrap")
    s.add_argument("--reference", default="mae")
    s.add_argument("--predictions", nargs="+", required=True)
    s.add_argument("--probe-tables", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--summary", required=True)
    s.add_argument("--figure", required=True)
    s = add("guidance", "guidance-scale sweep")
    s.add_argument("--out", required=True)
    s.add_argument("--figure", required=True)
    s.add_argument("--samples", required=True, help="generated latents (.npz) reused by fid/memorisation")
    s.add_argument("--mosaic", required=True)
    s = add("fid", "decomposed 3D-FID")
    s.add_argument("--samples", required=True)
    s.add_argument("--out", required=True)
    s = add("memorisation", "near-copy check")
    s.add_argument("--samples", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--per-sample", required=True)
    s = add("longitudinal", "forecast evaluation")
    s.add_argument("--out", required=True)
    s.add_argument("--per-pair", required=True)
    s = add("tokenizers", "MAE tokenizer vs AutoencoderKL")
    s.add_argument("--aekl", nargs="*", default=[], help="aekl model folders (one per bottleneck)")
    s.add_argument("--out", required=True)
    s = add("figures", "report figures: samples beside real scans and reconstructions")
    s.add_argument("--samples", required=True, help="guidance samples (.npz)")
    s.add_argument("--out-samples", required=True, help="PNG: real | reconstruction | generated per arm")
    s.add_argument("--out-reconstructions", required=True, help="PNG: real | reconstruction | error")
    s.add_argument("--n-generated", type=int, default=3, help="generated samples shown per arm")
    s.add_argument("--n-reconstructions", type=int, default=3, help="held-out scans in the reconstruction figure")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from braing3n.config import load_configs
    from braing3n.evaluate import stages

    try:
        config = load_configs(args.configfile)
        if args.sub == "embed":
            stages.run_embed(config, args.encoder, args.cohort, args.out)
        elif args.sub == "probes":
            stages.run_probes(config, args.encoder, args.embeddings, args.out, args.predictions)
        elif args.sub == "compare":
            print(stages.run_compare(config, args.reference, args.predictions, args.probe_tables, args.out,
                                     args.summary, args.figure))
        elif args.sub == "guidance":
            stages.run_guidance(config, args.out, args.figure, args.samples, args.mosaic)
        elif args.sub == "fid":
            stages.run_fid(config, args.samples, args.out)
        elif args.sub == "memorisation":
            stages.run_memorisation(config, args.samples, args.out, args.per_sample)
        elif args.sub == "longitudinal":
            stages.run_longitudinal(config, args.out, args.per_pair)
        elif args.sub == "tokenizers":
            from braing3n.evaluate.tokcompare import run_tokenizers

            run_tokenizers(config, args.aekl, args.out)
        elif args.sub == "figures":
            from braing3n.evaluate.figures import run_figures

            run_figures(config, args.samples, args.out_samples, args.out_reconstructions, args.n_generated,
                        args.n_reconstructions)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"braing3n evaluate {args.sub}: {exc}", file=sys.stderr)
        return 1
    return 0
