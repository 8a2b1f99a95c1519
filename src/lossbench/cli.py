"""The ``lossbench`` command: thin argument parsing over the library's functions.

Every :class:`UserError` ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

CHECKPOINT_HELP = ("auto (default): best.pt unless it was chosen on the test split, else last.pt (the final "
                   "weights); best; or last")


def _cmd_train(args: argparse.Namespace) -> int:
    from lossbench.api import train_runs

    train_runs(args.config, resume=args.resume, overrides=args.set, overwrite=args.overwrite)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from lossbench.api import run_sweep_config

    if args.dry_run:
        from lossbench.experiments.dry_run import dry_run_lines
        from lossbench.experiments.plan import plan_sweep

        print("\n".join(dry_run_lines(plan_sweep(args.config, args.set, args.out), args.jobs or 1)))
        return 0
    result = run_sweep_config(args.config, args.set, out=args.out, backend=args.backend, address=args.address,
                              jobs=args.jobs, rerun_changed=args.rerun_changed)
    return 0 if all(r["status"] == "done" for r in result.results) else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from lossbench.experiments.report import build_report

    html_path, md_path = build_report(args.sweep_dir)
    print(f"report: {html_path} and {md_path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import json

    from lossbench.plugins import load_config_plugins, load_entry_points
    from lossbench.plugins.catalog import catalog, catalog_lines

    if args.config:
        load_config_plugins(args.config)
    else:
        load_entry_points()
    print(json.dumps(catalog(args.kind), indent=2, default=str) if args.json else "\n".join(catalog_lines(args.kind)))
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from lossbench.config.show import resolved_text

    print(resolved_text(args.config, args.set), end="")
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from lossbench.config.show import schema_text, write_schema

    if args.out:
        print(f"wrote {write_schema(args.out)}")
    else:
        print(schema_text(), end="")
    return 0


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="show a config as lossbench reads it, or the config's JSON Schema",
                            description="Show a config resolved with every default, or write its JSON Schema.")
    csub = config.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND", required=True)
    p = csub.add_parser("show", help="print CONFIG resolved: overrides applied, every default filled in",
                        description="Print every document of CONFIG as lossbench reads it (after --set), with "
                        "every default; a sweep's grid:, report: and tune: as written.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=_cmd_config_show)
    p = csub.add_parser("schema", help="the JSON Schema of a config file (for editors that complete YAML)",
                        description="Print (or write to --out) the JSON Schema of a config document, from "
                        "lossbench's pydantic models; point your editor's YAML plugin at it.")
    p.add_argument("--out", help="write the schema to this file instead of printing it")
    p.set_defaults(func=_cmd_config_schema)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from lossbench.api import data_stats

    for line in data_stats(args.config, args.set, args.out):
        print(line)
    return 0


def _cmd_data_prepare_dsb2018(args: argparse.Namespace) -> int:
    from lossbench.data.formats.dsb2018 import prepare_dsb2018

    n = prepare_dsb2018(args.src, args.dst, args.size)
    print(f"wrote {n} images and merged masks ({args.size}x{args.size}) to {args.dst} "
          f"(seg_folder layout: images/, masks/0/)")
    return 0


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect or convert datasets", description="Inspect or convert datasets.")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = dsub.add_parser("stats", help="images per split, class counts, mean/std, sizes and a bar chart",
                        description="Print the data statistics of each experiment in CONFIG and write a "
                                    "class-distribution bar chart PNG. A sweep config's grid counts once per distinct "
                                    "data section (its data.* keys), its first cell's seed standing for the others.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--out", default=".", help="folder for <name>_class_distribution.png (default: .)")
    p.set_defaults(func=_cmd_data_stats)
    p = dsub.add_parser("prepare-dsb2018", help="convert Kaggle DSB 2018 stage1_train to the seg_folder layout",
                        description="Merge each DSB 2018 sample's nucleus masks and write images/ and masks/0/.")
    p.add_argument("src", help="folder holding stage1_train/ (or stage1_train itself)")
    p.add_argument("dst", help="output folder (seg_folder layout)")
    p.add_argument("--size", type=int, default=96, help="square side of the written images (default 96)")
    p.set_defaults(func=_cmd_data_prepare_dsb2018)


def _add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    from lossbench.experiments.backends import BACKENDS

    p = sub.add_parser("sweep", help="run a grid of experiments over seeds and write a report",
                       description="Run every cell of CONFIG's grid: (skipping finished cells that recorded the "
                       "same config and data), then write the report. "
                       "With a tune: section, first an Optuna study of the same budget per configuration, then its "
                       "best values over the seeds.")
    p.add_argument("config", help="YAML config with a grid: mapping of config keys to lists")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--jobs", type=int, default=None, help="cells (and tuning trials) to run in parallel "
                   "(default 1; with --backend ray: one per GPU of the cluster, or one per CPU without GPUs)")
    p.add_argument("--out", default=None, help="sweep folder (default: <output_dir>/<config name>)")
    p.add_argument("--rerun-changed", action="store_true",
                   help="train again the finished cells whose config or data changed since they trained (without "
                   "it such a cell stops the sweep before anything runs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells, which are done, and an estimate of the time left from finished cells; "
                   "train nothing")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: processes on this machine (default); ray: Ray tasks on a cluster "
                   "(pip install 'lossbench[ray]'), the sweep folder on storage every node sees")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="Ray cluster to join (auto: the one `ray start` runs here); default: $RAY_ADDRESS or a "
                   "`ray start` cluster on this machine, else a new Ray here")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("report", help="write report.html / report.md for a sweep folder")
    p.add_argument("sweep_dir", help="folder written by lossbench sweep")
    p.set_defaults(func=_cmd_report)


def _cmd_eval(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import evaluate_run

    evaluate_run(args.run, data=args.data, split=args.split, name=args.name, checkpoint=args.checkpoint,
                 batch_size=args.batch_size, device=args.device, posthoc_la=args.posthoc_la, tau=args.tau)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import predict_paths

    predict_paths(args.run, args.inputs, out_dir=args.out, checkpoint=args.checkpoint, device=args.device)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import export_run

    export_run(args.run, args.format, out=args.out, checkpoint=args.checkpoint, check=not args.no_check)
    return 0


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the experiment(s) in a config file", description="Train the "
                       "experiment(s) in CONFIG and write one run folder each, or continue one with --resume. "
                       "Under torchrun (torchrun --nproc_per_node=N -m lossbench train CONFIG) it trains "
                       "data-parallel.")
    p.add_argument("config", nargs="?", help="YAML config file (one or more experiments separated by ---)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt, exactly")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    p.set_defaults(func=_cmd_train)


def _add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="re-evaluate a run's checkpoint on its data or another dataset",
                       description="Evaluate RUN's checkpoint and write metrics.json, metrics.csv, per_class.csv "
                       "and the normalized confusion matrix (rows = true class) into RUN/eval/[NAME/].")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("--data", action="append", default=[], metavar="CONFIG_OR_KEY=VALUE",
                   help="another dataset: a config file (its data section is used) or a data override such as "
                   "val_per_class=100 or root=/data/other (repeatable)")
    p.add_argument("--split", default=None,
                   help="val, test, holdout (the held-out split of data.holdout) or train; default: the split the "
                   "run evaluated every epoch (test under data.eval_split: test)")
    p.add_argument("--name", help="write into RUN/eval/NAME/ instead of RUN/eval/")
    p.add_argument("--checkpoint", default="auto", help=CHECKPOINT_HELP)
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's batch_size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--posthoc-la", action="store_true",
                   help="post-hoc logit adjustment (Menon et al. 2021): score logits - tau * log(training prior), "
                   "tau chosen on the held-out split (data.holdout) or, for --split test, on val; never on the "
                   "split scored")
    p.add_argument("--tau", type=float, default=None, help="post-hoc logit adjustment with this fixed tau "
                   "(1 is the paper's default) instead of choosing it")
    p.set_defaults(func=_cmd_eval)


def _add_predict_export_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict images or folders with a run's checkpoint",
                       description="Print class and probabilities per image (classifier) or write mask PNGs and "
                       "overlays (segmenter) for every image in INPUT.")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", help="folder for masks and overlays (default RUN/predict)")
    p.add_argument("--checkpoint", default="auto", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a run's network as ONNX or TorchScript",
                       description="Export RUN's checkpoint (dynamic batch size) to RUN/export/ and check its "
                       "outputs against PyTorch (onnxruntime for ONNX).")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--out", help="output file (default RUN/export/model.onnx or model.torchscript.pt)")
    p.add_argument("--checkpoint", default="auto", help=CHECKPOINT_HELP)
    p.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    p.set_defaults(func=_cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Train and compare image classifiers and segmenters under losses for imbalanced data.",
    )
    from lossbench._version import __version__

    parser.add_argument("--version", action="version", version=f"lossbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_command(sub)
    _add_sweep_commands(sub)
    _add_eval_command(sub)
    _add_predict_export_commands(sub)
    p = sub.add_parser("list", help="list registered losses, models or data sources",
                       description="List the registered losses, models or data sources: the built-in ones and "
                       "those of installed plugin packages, each plugin's entry with its origin.")
    p.add_argument("kind", choices=["losses", "models", "sources"])
    p.add_argument("--config", help="also load this config's plugins: (your own .py files or modules)")
    p.add_argument("--json", action="store_true", help="print the entries as JSON (name, origin, what each declares)")
    p.set_defaults(func=_cmd_list)
    _add_data_commands(sub)
    _add_config_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lossbench.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"lossbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lossbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
