"""The axes a table or a claim filters on, and ``--where``'s conditions over them."""

from __future__ import annotations

from bench.registry import LeakbenchError, suggest

AXES = ("attack", "defense", "arch", "dataset", "batch_size", "mode", "bn_mode", "victim",
        "suite")
"""What a row or a column can be: the frame columns that tell cells apart, seeds aside."""
WHERE = (*AXES, "seed")
"""What ``--where`` can filter on."""
NAMED = ("attack", "defense", "arch", "dataset", "mode")
"""Axes whose registered name also matches in ``--where`` (``defense=noise``: every noise)."""


def parse_where(items: list[str] | None) -> dict[str, list[str]]:
    """``["arch=lenet,batch_size=1", "attack=dlg|idlg"]`` → ``{"arch": ["lenet"], …}``.

    Conditions are split at commas outside parentheses (labels such as ``noise(scale=0.1,
    distribution=laplace)`` keep theirs); ``|`` outside parentheses separates alternatives of
    one condition (a label's own ``|`` stays in it), and a column is named once (two
    conditions on it are ambiguous: "and" would keep nothing)."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        parts = split_outside_parentheses(item)
        if not any(p.strip() for p in parts):  # an empty shell variable, or ",": no condition
            raise LeakbenchError(f"--where: expected COLUMN=VALUE, got an empty value"
                                 f"{'' if not item.strip() else f' ({item.strip()!r})'}")
        if not all(p.strip() for p in parts):  # "arch=lenet,": was a condition left out?
            raise LeakbenchError(f"--where {item.strip()!r}: an empty condition between "
                                 f"commas; drop the stray comma or finish the condition")
        for part in parts:
            key, eq, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise LeakbenchError(f"--where: expected COLUMN=VALUE, got {part.strip()!r}")
            if key not in WHERE:
                raise LeakbenchError(f"--where: unknown column {key!r}{suggest(key, WHERE)}; "
                                     f"expected one of {', '.join(WHERE)}")
            if key in out:  # "and" (nothing) or "or"? it had meant "or": say so with a|b
                raise LeakbenchError(f"--where: {key} is given twice; {key}=A|B keeps either")
            alternatives = [v.strip() for v in split_outside_parentheses(value, "|")]
            if not all(alternatives):  # "attack=dlg|": "no record has attack=''" had said
                raise LeakbenchError(f"--where {part.strip()!r}: an empty alternative beside "
                                     "'|'; drop the stray '|' or finish the alternative")
            out[key] = alternatives
    return out


def split_outside_parentheses(text: str, sep: str = ",") -> list[str]:
    """``text`` split at each ``sep`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
