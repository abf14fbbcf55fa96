"""The ``superpose`` command: thin wrappers over the library.

superpose demo                     the TMS intro experiment, figure + results folder
superpose sweep SPEC.toml          run (or resume) a sweep into a result store
superpose sweep --fields [toy|sae] the fields a sweep spec sets, with defaults and docs
superpose figure NAME | --all      redraw figures from stored results
superpose figure --list            the registered figure names
superpose reproduce NAME           run an experiment, then draw its figure
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from superpose import registry


def _demo(args: argparse.Namespace) -> int:
    from superpose.demo import run_demo

    start = time.perf_counter()
    paths = run_demo(
        args.out, steps=args.steps, device=args.device, progress=False if args.quiet else None
    )
    print(f"demo finished in {time.perf_counter() - start:.1f} s; wrote:")
    for path in paths:
        print(f"  {path}")
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived during a sweep (a BaseException, as KeyboardInterrupt, so that no
    ``except Exception`` on the way catches it)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM (kill, SLURM, systemd, container runtimes) raises
    :class:`_Terminated` in the main thread, so that the sweep stops as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep(args: argparse.Namespace) -> int:
    from superpose import sweep
    from superpose.sweep.backends import WorkerDied
    from superpose.sweep.runner import RESULTS, finished_cells

    if args.fields:
        print(sweep.fields_table(args.fields))
        return 0
    if args.spec is None:
        raise SystemExit("superpose sweep: give a SPEC.toml (or --fields)")
    if args.dry_run:
        print(sweep.plan(args.spec, args.out, args.workers, args.backend, args.device))
        return 0
    spec = sweep.SweepSpec.from_toml(args.spec)
    try:
        with _sigterm_raises():
            summary = sweep.run(
                spec,
                out=args.out,
                backend=args.backend,
                address=args.address,
                device=args.device,
                progress=False if args.quiet else None,
                workers=args.workers,
            )
    except sweep.StoreLocked as error:  # another run writes there: one line, no traceback
        print(f"superpose sweep: error: {error}", file=sys.stderr)
        return 2
    except (WorkerDied, KeyboardInterrupt, _Terminated) as error:  # stopped: one line
        out = RESULTS / spec.name if args.out is None else Path(args.out)
        stored = (
            f"{finished_cells(spec, out)} of {len(spec.cells())} cells stored in {out}; "
            "rerun the same command to resume"
        )
        if isinstance(error, WorkerDied):
            print(f"superpose sweep: error: {error}; {stored}", file=sys.stderr)
            return 1
        print(f"interrupted: {stored}", file=sys.stderr)
        return 130 if isinstance(error, KeyboardInterrupt) else 143
    print(summary)
    return 1 if summary.failed else 0


def _figure(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(registry.names("figures")))
        return 0
    if not args.all and not args.name:
        raise SystemExit("superpose figure: give a NAME, --all or --list")
    if not args.all:
        for path in registry.load("figures", args.name).main(Path(args.results), Path(args.out)):
            print(path)
        return 0
    for name in registry.names("figures"):
        try:
            paths = registry.load("figures", name).main(Path(args.results), Path(args.out))
        except FileNotFoundError as error:
            print(f"skipped {name}: {error}", file=sys.stderr)
            continue
        for path in paths:
            print(path)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    experiment = registry.load("experiments", args.name)
    experiment.main(Path(args.results), device=args.device, quick=args.quick)
    for path in registry.load("figures", args.name).main(Path(args.results), Path(args.out)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superpose",
        description="superpose: toy models of superposition, from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train the TMS intro experiment and draw it")
    demo.add_argument("--out", default="superpose-demo", help="results folder")
    demo.add_argument("--steps", type=int, default=5000, help="training steps per model")
    demo.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    demo.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they show on a terminal only, never in a log file)",
    )
    demo.set_defaults(run=_demo)

    sweep = commands.add_parser("sweep", help="run or resume a sweep from a TOML spec")
    sweep.add_argument("spec", nargs="?", help="sweep spec (TOML)")
    sweep.add_argument(
        "--fields",
        nargs="?",
        const="toy",
        choices=("toy", "sae"),
        help="print the fields of a task's cells (default toy): default, allowed values, "
        "which cells use them, doc",
    )
    sweep.add_argument(
        "--out", default=None, help="result store folder (default: results/<the spec's name>)"
    )
    sweep.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where chunks train: this machine (default) or a Ray cluster",
    )
    sweep.add_argument("--address", default=None, help="Ray cluster address, e.g. auto")
    sweep.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local backend: chunks trained at a time (default: one per CPU core; 1 on a GPU)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="print the cells and packing plan")
    sweep.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (it shows on a terminal only, never in a log file)",
    )
    sweep.set_defaults(run=_sweep)

    figure = commands.add_parser("figure", help="redraw figures from stored results")
    figure.add_argument("name", nargs="?", help="a figure name (see --list)")
    figure.add_argument("--all", action="store_true", help="every registered figure")
    figure.add_argument("--list", action="store_true", help="print the figure names")
    figure.add_argument("--results", default="results", help="stored results root")
    figure.add_argument("--out", default="figures/out", help="where figures go")
    figure.set_defaults(run=_figure)

    reproduce = commands.add_parser("reproduce", help="run an experiment, then its figure")
    reproduce.add_argument("name", help="an experiment name (see superpose figure --list)")
    reproduce.add_argument("--results", default="results", help="stored results root")
    reproduce.add_argument("--out", default="figures/out", help="where figures go")
    reproduce.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    reproduce.add_argument("--quick", action="store_true", help="a small smoke-test run")
    reproduce.set_defaults(run=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``superpose`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as error:
        print(f"superpose {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
