"""``leakbench list``: the registered components, metrics and built-in suites."""

from __future__ import annotations

import argparse

from bench.registry import REGISTRIES


def cmd_list(args: argparse.Namespace) -> int:
    """Print what is registered, composed first so that a plug-in failing to load is the only
    line (it had followed a header already printed)."""
    kinds = [args.kind] if args.kind else [*REGISTRIES, "metrics", "suites"]
    lines: list[str] = []
    for kind in kinds:
        lines.append(f"{kind}:")
        if kind == "metrics":
            lines += _metrics()
        elif kind == "suites":
            lines += _suites()
        else:
            lines += _components(kind)
    print("\n".join(lines))
    return 0


def _metrics() -> list[str]:
    from bench.metrics import list_metrics

    out = []
    for m in list_metrics():
        better = "higher" if m.higher_is_better else "lower"
        out.append(f"  {m.name:<16} {m.description()}")
        out.append(f"      {m.modality}, {m.kind.replace('_', '-')}, {better} is better"
                   + (", needs a local weights file" if m.needs_weights else ""))
    return out


def _suites() -> list[str]:
    from bench.suite import builtin_suites, load_suite

    return [f"  {name:<16} {load_suite(name).description}" for name in builtin_suites()]


def _components(kind: str) -> list[str]:
    out = []
    for entry in REGISTRIES[kind].entries():
        out.append(f"  {entry.name:<16} {entry.description}")
        threat = []
        if getattr(entry.cls, "needs", None):
            threat.append("needs " + ", ".join(sorted(entry.cls.needs)))
        if getattr(entry.cls, "wants", None):
            threat.append("uses if granted " + ", ".join(sorted(entry.cls.wants)))
        if threat:
            out.append("      threat model: " + "; ".join(threat))
        out += [f"      {p.describe()}" for p in entry.params]
    return out
