"""``leakbench rank``: R-GAP's per-layer rank analysis of a registered architecture from the
command line (:func:`attacks.rgap_rank.rank_report`)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.registry import LeakbenchError

MAX_SIDE = 4096
"""The largest channel count, height or width ``--input-shape`` takes."""
MAX_INPUT_VALUES = 1 << 22
"""The most values in one input (C·H·W; a 1024² RGB image is 3·2^20): the analysis's
matrices grow with the input, and a larger one exhausts memory."""
MAX_CLASSES = 100_000


def add_rank_parser(sub: Any) -> None:
    s = sub.add_parser("rank", help="R-GAP rank analysis of an architecture")
    s.add_argument("arch")
    s.add_argument("--input-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    s.add_argument("--num-classes", type=int, default=10)
    s.add_argument("--param", action="append", help="arch parameter NAME=VALUE (repeatable)")
    s.set_defaults(func=cmd_rank)


def cmd_rank(args: argparse.Namespace) -> int:
    from attacks.rgap_rank import MAX_RANK_PARAMETERS, rank_report

    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise LeakbenchError(f"--input-shape: expected C,H,W, got {args.input_shape!r}")
    if max(shape) > MAX_SIDE or shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES:
        raise LeakbenchError(f"--input-shape {args.input_shape}: at most {MAX_SIDE} per size "
                             f"and {MAX_INPUT_VALUES} values (C·H·W) in all")
    if not 1 <= args.num_classes <= MAX_CLASSES:
        raise LeakbenchError(f"--num-classes: expected 1 to {MAX_CLASSES}, got "
                             f"{args.num_classes}")
    params = {}
    for item in args.param or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():  # "width": width=None
            raise LeakbenchError(f"--param {item}: expected NAME=VALUE, e.g. width=8")
        if key in params:  # the last one silently won
            raise LeakbenchError(f"--param {key}: given twice")
        params[key] = _yaml_value(key, value)
    from bench.registry import ARCHS, validate_params

    entry = ARCHS.get(args.arch)
    params = validate_params(entry.params, params, args.arch)
    try:
        size = entry.cls(**params).parameter_count(shape, args.num_classes)
    except Exception as e:  # noqa: BLE001 - a plug-in's constructor may raise anything
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise LeakbenchError(f"rank {args.arch}: its constructor raised {type(e).__name__}"
                             f"{': ' + first if first else ''}") from None
    if size is not None and size > MAX_RANK_PARAMETERS:  # mlp hidden=65536 depth=16: 17 GB
        raise LeakbenchError(f"rank {args.arch}: {size:,} parameters at these settings, above "
                             f"the {MAX_RANK_PARAMETERS:,} the analysis builds")
    try:
        report = rank_report(args.arch, params, shape, args.num_classes)
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:  # the arch or torch
        # refuses the shape (a size past torch's integers is a TypeError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeakbenchError(f"rank {args.arch} at --input-shape {args.input_shape}: "
                             f"{first[:200]}") from None
    print(report)
    return 0


def _yaml_value(key: str, text: str) -> object:
    """``--param``'s VALUE as YAML, read as a suite's values are (safe: no tags that build
    objects; no YAML 1.1 base-60 numbers: ``width=1:30`` had been read as 90); one line when
    it is not YAML."""
    import yaml

    from bench.suite.read import SAFE_LOADER

    try:
        return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except RecursionError:
        raise LeakbenchError(f"--param {key}: not a YAML value (nested too deeply)") from None
    except Exception as e:  # YAMLError, or a tag's constructor failing (!!int _: IndexError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "flow level" in first or "block level" in first:  # libyaml's own depth limits
            raise LeakbenchError(f"--param {key}: not a YAML value (nested too deeply)"
                                 ) from None
        raise LeakbenchError(f"--param {key}={text[:80]}: not a YAML value "
                             f"({first[:120]})") from None
