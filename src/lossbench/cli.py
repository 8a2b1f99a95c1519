"""The ``lossbench`` command: thin argument parsing over the library's functions.

Every :class:`UserError` ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _cmd_train(args: argparse.Namespace) -> int:
    from lossbench.config import load_experiments
    from lossbench.engine import train

    experiments = load_experiments(args.config, args.set)
    start = time.perf_counter()
    for exp in experiments:
        summary = train(exp, overwrite=args.overwrite)
        best = summary["best"]
        main = summary["main_metric"]
        print(f"{exp.name}: best val {main} {best[main]:.4f} at epoch {best['epoch']} -> {exp.run_dir}")
    print(f"wall time: {time.perf_counter() - start:.1f}s for {len(experiments)} run(s)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.kind == "losses":
        from lossbench.losses import LOSSES, loss_parameters, loss_summary

        for name, cls in LOSSES.items():
            params = ", ".join(f"{k}={v!r}" for k, v in loss_parameters(cls).items())
            print(f"{name}({params})\n    {loss_summary(cls)}")
    elif args.kind == "models":
        from lossbench.models import MODELS

        for name, entry in MODELS.items():
            print(f"{name:<16} {entry.task:<15} {entry.description.splitlines()[0] if entry.description else ''}")
    else:
        from lossbench.data.sources import SOURCES

        for name, fn in SOURCES.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:<16} {doc[0] if doc else ''}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import evaluate_run

    evaluate_run(args.run, data=args.data, split=args.split, name=args.name, checkpoint=args.checkpoint,
                 batch_size=args.batch_size, device=args.device)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import predict_paths

    predict_paths(args.run, args.inputs, out_dir=args.out, checkpoint=args.checkpoint, device=args.device)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lossbench.engine.inference import export_run

    export_run(args.run, args.format, out=args.out, checkpoint=args.checkpoint, check=not args.no_check)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Train and compare image classifiers and segmenters under losses for imbalanced data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train the experiment(s) in a config file", description="Train the "
                       "experiment(s) in CONFIG and write one run folder each.")
    p.add_argument("config", help="YAML config file (one or more experiments separated by ---)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="re-evaluate a run's checkpoint on its data or another dataset",
                       description="Evaluate RUN's checkpoint and write metrics.json, metrics.csv, per_class.csv "
                       "and the normalized confusion matrix (rows = true class) into RUN/eval/[NAME/].")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("--data", action="append", default=[], metavar="CONFIG_OR_KEY=VALUE",
                   help="another dataset: a config file (its data section is used) or a data override such as "
                   "val_per_class=100 or root=/data/other (repeatable)")
    p.add_argument("--split", choices=["val", "test", "train"], default="val", help="which split (default val)")
    p.add_argument("--name", help="write into RUN/eval/NAME/ instead of RUN/eval/")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's batch_size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="predict images or folders with a run's checkpoint",
                       description="Print class and probabilities per image (classifier) or write mask PNGs and "
                       "overlays (segmenter) for every image in INPUT.")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", help="folder for masks and overlays (default RUN/predict)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a run's network as ONNX or TorchScript",
                       description="Export RUN's checkpoint (dynamic batch size) to RUN/export/ and check its "
                       "outputs against PyTorch (onnxruntime for ONNX).")
    p.add_argument("run", help="run folder, e.g. runs/my-run")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--out", help="output file (default RUN/export/model.onnx or model.torchscript.pt)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("list", help="list registered losses, models or data sources")
    p.add_argument("kind", choices=["losses", "models", "sources"])
    p.set_defaults(func=_cmd_list)
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
