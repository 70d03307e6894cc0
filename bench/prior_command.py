"""``leakbench prior-curve``: the command line of the learned-prior track's sample-quality
curve (FID/KID against score evaluations, :mod:`bench.prior_curve`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.registry import LeakbenchError

MAX_SAMPLES = 100_000  # per configuration; the committed curve draws 1 000 (4–6 min)
MAX_SCORE_STEPS = 1_000_000  # as a suite's dmcmc score_steps
CURVE_DEFAULTS = {"dataset": "digits", "size": 16, "samples": 1000, "seed": 0,
                  "score_steps": 2000, "out": None}  # out: default_out(dataset, size)
CURVES = Path("results") / "prior" / "curves"  # the committed curve: curves/digits16/


def default_out(dataset: str, size: int) -> Path:
    """Where a curve goes without ``--out``: ``results/prior/curves/<dataset><size>`` (no
    size: the dataset's own), beside the committed one and not among the prior suite's
    records."""
    return CURVES / f"{dataset}{size or ''}"


def add_prior_curve_parser(sub: Any) -> None:
    s = sub.add_parser("prior-curve", help="FID/KID against score evaluations for the Heun and "
                                           "DMCMC samplers of a public-split score model")
    s.add_argument("--dataset", help="registered dataset (default digits)")
    s.add_argument("--size", type=int, help="image side (default 16; 0: dataset's)")
    s.add_argument("--samples", type=int, help="samples per configuration (default 1000)")
    s.add_argument("--seed", type=int, help="seed of the score model and samplers (default 0)")
    s.add_argument("--score-steps", type=int, help="score-model training steps (default 2000)")
    s.add_argument("--inception", help="Inception weights file for FID/KID (default: the "
                   "usual places, else the public feature network)")
    s.add_argument("--out", help="output folder (default results/prior/curves/<dataset><size>, "
                   "where the committed digits16 curve lies)")
    s.add_argument("--attacks", metavar="DIR", help="instead: FID/KID of DIR's reconstructions "
                   "pooled per leaderboard group, in the same features (DIR/attack_quality.md)")
    s.set_defaults(func=cmd_prior_curve)


def cmd_prior_curve(args: argparse.Namespace) -> int:
    from bench.outputs import store_part_problem, writable_problem
    from bench.perceptual import MIN_GROUP, fid_status, given_fid_weights_problem
    from bench.prior_curve import run_curve, write_attack_quality

    problem = given_fid_weights_problem(args.inception, "--inception")  # '' is refused first
    if problem:  # before the work, not after it
        raise LeakbenchError(problem)
    curve_flags = [f"--{name.replace('_', '-')}" for name in CURVE_DEFAULTS
                   if getattr(args, name) is not None]
    if args.attacks:
        if curve_flags:  # they had been ignored in silence (--out too: DIR is written)
            raise LeakbenchError(f"prior-curve --attacks: {', '.join(curve_flags)} set(s) the "
                                 "sampler curve, not --attacks (which writes "
                                 "DIR/attack_quality.md with --inception's features)")
        print(write_attack_quality(Path(args.attacks), args.inception))
        return 0
    for name, default in CURVE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    from bench.scoremodel import ScoreSettings

    if not 0 <= args.seed < 2 ** 63:  # torch.manual_seed overflowed past 2**64, after setup
        raise LeakbenchError(f"prior-curve: --seed must be 0 to 2**63 - 1, got {args.seed}")
    if not 2 <= args.samples <= MAX_SAMPLES:
        raise LeakbenchError(f"prior-curve: --samples must be 2 to {MAX_SAMPLES}, got "
                             f"{args.samples}")
    if args.samples < MIN_GROUP and fid_status(args.inception)[0]:  # not after the sampling
        raise LeakbenchError(f"prior-curve: --samples must be at least {MIN_GROUP} with "
                             f"Inception features (FID/KID pool {MIN_GROUP} images or more), "
                             f"got {args.samples}")
    if not 1 <= args.score_steps <= MAX_SCORE_STEPS:  # a suite's dmcmc score_steps' bound
        raise LeakbenchError(f"prior-curve: --score-steps must be 1 to {MAX_SCORE_STEPS}, got "
                             f"{args.score_steps}")
    out = default_out(args.dataset, args.size) if args.out is None else Path(args.out)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # before minutes of sampling, not at the first write
        where = f"--out {out}" if blocking == out else f"--out {out}: {blocking}"
        raise LeakbenchError(f"{where}: exists and is not a folder")
    problem = writable_problem(out)
    if problem:
        raise LeakbenchError(f"--out {problem}")
    problem = store_part_problem(out, f"--out {out}")  # samplers.json read as a record
    if problem:
        raise LeakbenchError(problem)
    for name in ("samplers.json", "samplers.md", "samplers.png"):  # found after the sampling
        if (out / name).is_dir() and not (out / name).is_symlink():
            raise LeakbenchError(f"--out {out}: a folder stands where {name} goes")
    params = {"size": args.size} if args.size else {}
    run_curve(args.dataset, params, out, args.samples, args.seed,
              ScoreSettings(steps=args.score_steps), inception=args.inception)
    print(out / "samplers.md")
    return 0
