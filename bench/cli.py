"""The ``leakbench`` command line.

    leakbench list [attacks|defenses|archs|datasets|suites]
    leakbench run [SUITE|FILE] [--out DIR] [--jobs N] [--threads T] [--device auto|cpu|cuda]
                  [--force] [--dry-run] [--max-cells N] [--verbose] [--trials K]
                  [--cpu-conv onednn|native]
                  [--executor inline|process|ray] [--ray-address ADDR] [--gpus-per-task X]
    leakbench merge OUT DIR...
    leakbench leaderboard [DIR] [--format markdown|latex]
    leakbench export DIR [--format csv] [--output FILE]
    leakbench table [DIR] [--rows AXIS] [--cols AXIS] [--value METRIC] [--where COL=VAL,...]
                    [--best row|col|none] [--format latex|markdown|csv] [--caption TEXT]
                    [--label LABEL] [--output FILE]
    leakbench report [DIR] [--fid-weights FILE]
    leakbench rerun DIR [--sample N] [--jobs N] [--threads T] [--timeout S]
    leakbench diff A B [--metric psnr[,ssim]] [--format markdown|csv] [--common]
    leakbench rank ARCH [--input-shape C,H,W] [--param NAME=VALUE]
    leakbench site DIR... --out SITE
    leakbench check DIR [--claims NAME|FILE] [--against CHECK_JSON|DIR | --against-records DIR]
                    [--format F] [--accept]

--jobs defaults to the usable cores (affinity mask and cgroup quota), one torch thread each;
--threads T alone gives cores // T workers; see bench.cores.

Bad input is one line on stderr and exit status 2, never a traceback. ``run`` reads its suite
file within the limits of :mod:`bench.suite.limits` before torch and the registries are
imported (the imports take seconds), so a file that breaks them is refused at once.
"""

from __future__ import annotations

import argparse
import codecs
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.claims.command import add_check_parser
from bench.cli_support import (
    BUILTIN_EXECUTORS,
    ExecutorChoices,
    Parser,
    empty_path_problem,
    frozen_gc,
    ignored_run_flags,
    sigterm_as_interrupt,
)
from bench.cores import check_parallelism
from bench.diff_command import add_diff_parser
from bench.list_command import cmd_list
from bench.paths import missing_link_target
from bench.prior_command import add_prior_curve_parser
from bench.rank_command import add_rank_parser
from bench.registry import REGISTRIES, LeakbenchError, one_line, warn
from bench.site.command import add_site_parser
from bench.stops import Terminated, is_sigterm

if TYPE_CHECKING:
    from bench.executors import ExecutorOptions

DEFAULT_SUITE = "quick"
RESULTS = Path("results")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.suite.read import read_suite

    document = read_suite(args.suite)  # within the limits, before torch is imported
    from bench.suite import load_suite

    with frozen_gc():
        suite = load_suite(document)  # refuses before torch is imported, and makes no threads
    from bench.cells.base import fix_float_mode

    fix_float_mode()  # before torch's pool threads exist: --jobs 0 cells run in them
    for message in suite.warnings:
        warn(f"{suite.source or suite.name}: {message}")
    out = Path(args.out) if args.out else RESULTS / suite.name
    check_parallelism(args.jobs, args.threads)
    if args.max_cells is not None and args.max_cells < 1:
        raise LeakbenchError(f"--max-cells: expected a positive number, got {args.max_cells}")
    if args.trials < 1:
        raise LeakbenchError(f"--trials: expected 1 (every cell alone) or more, got {args.trials}")
    from bench.runner import MAX_CELLS, resolve_device, run_suite

    limit = args.max_cells or MAX_CELLS
    options = _executor_options(args)  # a dry run refuses what the run would refuse
    device_type = resolve_device(args.device).type
    options.check(device_type, requested=args.device)
    if args.cpu_conv != "onednn" and device_type != "cpu":
        warn(f"--cpu-conv {args.cpu_conv}: chooses CPU convolution kernels; this run is on "
             f"{device_type}, where it changes nothing")
    from bench.summary import dry_run, warn_no_cells

    for message in ignored_run_flags(args):
        warn(message)
    if args.dry_run:
        return dry_run(suite, out, args.force, args.retry_failed, args.verbose, limit)
    summary = run_suite(suite, out, jobs=args.jobs, device=args.device, force=args.force,
                        retry_failed=args.retry_failed, progress=not args.quiet,
                        executor=args.executor, max_cells=limit,
                        executor_options=options, threads=args.threads, trials=args.trials,
                        cpu_conv=args.cpu_conv, leaderboard=not args.no_leaderboard)
    print(summary.line())
    if summary.total == 0:
        warn_no_cells(suite)
    if summary.leaderboard_problem:
        raise LeakbenchError(summary.leaderboard_problem)
    if summary.leaderboard is not None:
        print(f"leaderboard: {summary.leaderboard}")
    return 0


def _executor_options(args: argparse.Namespace) -> ExecutorOptions:
    """The cluster options; given to an executor that runs no cluster, an error."""
    from bench.executors import ExecutorOptions

    options = ExecutorOptions(args.ray_address, args.cpus_per_task, args.gpus_per_task,
                              args.max_retries)
    flags = [f.replace("--address", "--ray-address") for f in options.given()]
    if flags and args.executor != "ray":
        raise LeakbenchError(f"{', '.join(flags)}: only with --executor ray")
    jobs = getattr(args, "jobs", None)
    if args.executor == "inline" and jobs not in (None, 0):
        raise LeakbenchError(f"--jobs {jobs}: not with --executor inline (it runs one cell "
                             "at a time, in this process)")
    if args.executor == "process" and jobs == 0:
        raise LeakbenchError("--jobs 0 is inline: not with --executor process (give 1 or "
                             "more workers)")
    if args.executor == "ray" and jobs is not None:
        raise LeakbenchError("--jobs: not with --executor ray (the cluster's resources decide "
                             "how many cells run at once; --cpus-per-task sizes each)")
    if args.executor == "ray":
        from bench.executors.ray import import_ray

        import_ray()  # without Ray: one line naming the extra, before any work
    return options


def cmd_merge(args: argparse.Namespace) -> int:
    from bench.merge import merge_stores

    report = merge_stores(Path(args.out), [Path(d) for d in args.dirs])
    for problem in report.problems:  # as every other reader names a damaged record
        warn(problem)
    for line in [*report.conflicts, report.summary()]:
        print(line)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.leaderboard import write_leaderboard

    print(write_leaderboard(Path(args.dir), args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.perceptual import given_fid_weights_problem
    from bench.report import write_report

    problem = given_fid_weights_problem(args.fid_weights, "--fid-weights")
    if problem:
        raise LeakbenchError(problem)
    print(write_report(Path(args.dir), args.fid_weights))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.leaderboard import export

    print(export(Path(args.dir), args.format, Path(args.output) if args.output else None,
                 aggregate=args.aggregate))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bench.leaderboard.pivot import write_table

    output = Path(args.output) if args.output else None
    if args.format == "csv":  # a CSV is the numbers alone
        for flag, given in (("--caption", args.caption), ("--label", args.label)):
            if given is not None:
                warn(f"{flag}: a CSV has no caption or label; ignored")
    text, p = write_table(Path(args.dir), args.rows, args.cols, args.value, args.where,
                          args.best, args.format, args.caption, args.label, output)
    if p.pooled:
        uneven = f"; entries pool different values of {', '.join(p.uneven)}" if p.uneven else ""
        warn("table: each cell pools records across several values of " +
             ", ".join(p.pooled) + f"{uneven} (the caption lists them); narrow with --where")
    if output is None:
        sys.stdout.write(text)
    else:
        print(output)
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from bench.cells.base import fix_float_mode
    from bench.rerun import report, rerun

    fix_float_mode()  # as cmd_run: before torch's pool threads exist
    checks = rerun(Path(args.dir), args.sample, args.metric, args.seed, args.jobs, args.device,
                   timeout=args.timeout, threads=args.threads)
    print(report(checks))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="leakbench", description="Benchmark gradient-leakage attacks and defenses.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("list", help="list registered components and built-in suites")
    s.add_argument("kind", nargs="?", choices=[*REGISTRIES, "metrics", "suites"])
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="run a suite (default: quick)")
    s.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help="built-in name or YAML file")
    s.add_argument("--out", help="output folder (default: results/<suite>)")
    s.add_argument("--jobs", type=int, help="worker processes (default: the usable cores, or "
                   "cores // --threads; 0: inline, no timeout)")
    s.add_argument("--threads", type=int, help="torch threads per worker (default: 1, or "
                   "cores // --jobs; all cores inline; --executor ray: CPUs per task)")
    s.add_argument("--executor", choices=ExecutorChoices(),
                   metavar="{" + ",".join(BUILTIN_EXECUTORS) + "}",  # not the list: no import
                   help="where cells run (default: process, or inline with --jobs 0)")
    s.add_argument("--ray-address", help="--executor ray: a cluster to join (auto, HOST:PORT, "
                   "ray://HOST:PORT); default: start a local one")
    s.add_argument("--cpus-per-task", type=float,
                   help="--executor ray: CPUs per cell (--threads, else 1)")
    s.add_argument("--gpus-per-task", type=float,
                   help="--executor ray: GPUs per cell, 0.25 packs four on one GPU")
    s.add_argument("--max-retries", type=int, help="--executor ray: reruns of a dead worker's cell")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where cells run (default auto: cuda where there is one, else cpu)")
    s.add_argument("--cpu-conv", default="onednn", choices=["onednn", "native"], help="the "
                   "attacks' CPU convolutions: oneDNN (torch's default) or ATen's native "
                   "kernels, faster for LeNet-size networks on some CPUs; see README")
    s.add_argument("--trials", type=int, default=8,
                   help="cells differing only by seed batched into one vectorised pass where "
                        "the attack allows (1: every cell alone; default 8)")
    s.add_argument("--force", action="store_true", help="re-run cells that have records")
    s.add_argument("--retry-failed", action="store_true", help="re-run error/timeout cells")
    s.add_argument("--dry-run", action="store_true", help="list cells and their status")
    s.add_argument("--max-cells", type=int, help="allow a grid of up to N cells (default 10000)")
    s.add_argument("--verbose", action="store_true",
                   help="--dry-run: list every cell even of a large matrix")
    s.add_argument("--no-leaderboard", action="store_true", help="do not write leaderboard.md")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("merge", help="merge record stores from other machines or runs into OUT")
    s.add_argument("out", help="the store to merge into (created where missing)")
    s.add_argument("dirs", nargs="+", metavar="DIR", help="record stores to merge from")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("leaderboard", help="write the leaderboard of a results folder")
    s.add_argument("dir", nargs="?", default=str(RESULTS / DEFAULT_SUITE),
                   help=f"results folder (default {RESULTS / DEFAULT_SUITE})")
    s.add_argument("--format", default="markdown", choices=["markdown", "latex"])
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("report", help="write DIR/report.md: tables, figures, FID/KID, gallery")
    s.add_argument("dir", nargs="?", default=str(RESULTS / DEFAULT_SUITE),
                   help=f"results folder (default {RESULTS / DEFAULT_SUITE})")
    s.add_argument("--fid-weights", help="torch-fidelity Inception weights (a local file)")
    s.set_defaults(func=cmd_report)

    add_rank_parser(sub)

    s = sub.add_parser("rerun", help="re-run N committed cells here; are they inside the "
                                     "committed intervals?")
    s.add_argument("dir", help="results folder")
    s.add_argument("--sample", type=int, default=20, help="cells to re-run (default 20)")
    s.add_argument("--metric", help="registered metric compared (default: the records' "
                   "leaderboard metric, psnr for images, rouge1 for text)")
    s.add_argument("--seed", type=int, default=0, help="which cells are drawn")
    s.add_argument("--jobs", type=int, help="worker processes (default: the usable cores; "
                   "0: inline)")
    s.add_argument("--threads", type=int, help="torch threads per worker (default: 1, or "
                   "cores // --jobs)")
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where the cells re-run (default cpu)")
    s.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a cell may run (default 600; a cell that timed out re-runs "
                   "under its own record's limit where lower)")
    s.set_defaults(func=cmd_rerun)

    s = sub.add_parser("export", help="export one flat row per cell")
    s.add_argument("dir", help="results folder")
    s.add_argument("--format", default="csv", choices=["csv"])
    s.add_argument("--output", help="file to write (default: DIR/cells.csv)")
    s.add_argument("--aggregate", action="store_true",
                   help="one row per table row (mean, 95%% CI, n): DIR/aggregate.csv")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("table", help="one metric pivoted over two axes, for a paper "
                                     "(mean ± 95%% CI, best in bold)")
    s.add_argument("dir", nargs="?", default=str(RESULTS / DEFAULT_SUITE),
                   help=f"results folder (default {RESULTS / DEFAULT_SUITE})")
    s.add_argument("--rows", default="defense", help="axis of the rows (default defense)")
    s.add_argument("--cols", default="attack", help="axis of the columns (default attack)")
    s.add_argument("--value", help="per-item metric shown (default: the records' leaderboard "
                   "metric, psnr for images, rouge1 for text)")
    s.add_argument("--where", action="append", metavar="COL=VAL,...",
                   help="keep records with COL=VAL (label or registered name; a|b for "
                        "either); repeatable")
    s.add_argument("--best", default="row", choices=["row", "col", "none"],
                   help="bold the best entry per row (default), per column, or none")
    s.add_argument("--format", default="latex", choices=["latex", "markdown", "csv"])
    s.add_argument("--caption", help="caption (default: metric, filters, interval, n)")
    s.add_argument("--label", help="LaTeX label / markdown anchor (default "
                   "tab:METRIC-ROWS-COLS; '' for none)")
    s.add_argument("--output", help="file to write atomically (default: stdout)")
    s.set_defaults(func=cmd_table)

    add_diff_parser(sub)

    add_site_parser(sub)
    add_prior_curve_parser(sub)
    add_check_parser(sub)
    return p


def _printable(err: UnicodeError) -> tuple[str | bytes, int]:
    """Encode what a stream's encoding cannot: a path's undecodable bytes (surrogates) as
    those bytes, any other character as a backslash escape."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    chunk = err.object[err.start:err.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in chunk):
        return bytes(ord(c) - 0xDC00 for c in chunk), err.end
    return codecs.backslashreplace_errors(err)


PRINTABLE = "leakbench-printable"
codecs.register_error(PRINTABLE, _printable)


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path that is not UTF-8 prints as its bytes,
        # and a '—' or '×' on an ASCII terminal (PYTHONIOENCODING=ascii) as an escape: it
        # had been a traceback, exit 1, after the run's work was done
        getattr(stream, "reconfigure", lambda **_: None)(errors=PRINTABLE)
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = empty_path_problem(args)
    if problem:
        print(f"leakbench: error: {one_line(problem)}", file=sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            return args.func(args)
    except LeakbenchError as e:
        print(f"leakbench: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except OSError as e:  # a path given that cannot be read or written (a file, not a folder)
        where = e.filename2 if e.filename2 is not None else e.filename  # a rename: its target
        reason = e.strerror or str(e)
        if (isinstance(e, FileExistsError) and where is not None and Path(where).exists()
                and not Path(where).is_dir()):
            reason = "exists and is not a folder"  # mkdir on a file
        elif isinstance(e, FileExistsError) and where is not None and os.path.islink(where):
            reason = missing_link_target(where)
        print(one_line(f"leakbench: error: {str(where) + ': ' if where is not None else ''}"
                       f"{reason}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a forced run's unreached cells keep their old records
        term = is_sigterm(e)
        how = "terminated (SIGTERM)" if term else "interrupted"
        kept = "" if args.command != "run" else "; finished cells are kept, " + (
            "the cells not reached keep their old records: --force again redoes every cell"
            if getattr(args, "force", False) else "re-run to resume")
        print(f"leakbench: {how}{kept}", file=sys.stderr)
        return 128 + (Terminated.signum if term else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())


