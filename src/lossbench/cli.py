"""The ``lossbench`` command: thin argument parsing over the library's functions.

Every :class:`UserError` ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from lossbench.config import load_experiments
    from lossbench.engine import resume, train
    from lossbench.engine.distributed import session
    from lossbench.errors import UserError

    if (args.config is None) == (args.resume is None):
        raise UserError("train: give either a CONFIG file or --resume RUN_DIR (not both)")
    if args.resume is not None and (args.set or args.overwrite):
        raise UserError("train --resume continues a run with its recorded config; drop --set / --overwrite")
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    start = time.perf_counter()
    if args.resume is not None:
        summaries = [resume(args.resume)]
    else:
        experiments = load_experiments(args.config, args.set)
        with session(experiments[0].device):
            summaries = [train(exp, overwrite=args.overwrite) for exp in experiments]
    for summary in summaries if is_main else []:
        name, best = summary["best_metric"], summary["best"]
        print(f"{summary['name']}: best {name} {best[name]:.4f} at epoch {best['epoch']} -> {summary['run_dir']}")
    if is_main:
        print(f"wall time: {time.perf_counter() - start:.1f}s for {len(summaries)} run(s)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Train and compare image classifiers and segmenters under losses for imbalanced data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
