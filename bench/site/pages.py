"""What the site's cell list and cell pages show of the records: plain rows of text,
read from the record fields every kind of record has (a text or utility record shows what it
holds, nothing here assumes images)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bench.leaderboard import scenario_title
from bench.metrics import format_value, get_metric
from bench.site.tables import HtmlTable, html_table


def _number(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def _scenario(r: dict[str, Any], title: str | None) -> str:
    return title or f"{r['dataset_label']} · {r['arch_label']}"


def cell_fields(r: dict[str, Any], title: str | None) -> list[tuple[str, str]]:
    """The key fields of a record, label → text, in reading order (absent ones left out)."""
    client = r.get("client") or {}
    timing = r.get("timing") or {}
    fields = [("Suite", r["suite"]), ("Cell", r["cell_id"]), ("Kind", r.get("kind", "attack")),
              ("Status", r["status"]), ("Scenario", _scenario(r, title)),
              ("Dataset", r["dataset_label"]), ("Architecture", r["arch_label"]),
              ("Batch size", r.get("batch_size")),
              ("Client", ", ".join(f"{k} {v}" for k, v in sorted(client.items()))),
              ("Victim", r.get("victim")), ("Defense", r["defense_label"]),
              ("Attack", r.get("attack_label")), ("Seed", r["seed"]),
              ("Skip reason", r.get("skip_reason")), ("Error", r.get("error"))]
    for key, value in (r.get("metrics") or {}).items():
        if value is not None and not isinstance(value, (dict, list)):
            fields.append((f"metrics.{key}", _number(value)))
    for key, value in sorted(timing.items()):
        fields.append((f"timing.{key}", _number(value)))
    fields += [("Gradient evaluations", r.get("grad_evals")), ("Iterations", r.get("iterations")),
               ("Commit", (r.get("provenance") or {}).get("git_commit"))]
    return [(k, _number(v)) for k, v in fields if v is not None and v != ""]


def cells_table(records: list[dict[str, Any]], scenario: dict[str, tuple]) -> HtmlTable:
    """Every record of a suite, one row each, linking to its page."""
    psnr = get_metric("psnr")
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        key = scenario.get(r["cell_id"])
        rows.append({"Cell": r["cell_id"], "Kind": r.get("kind", "attack"),
                     "Scenario": _scenario(r, scenario_title(key) if key else None),
                     "Defense": r["defense_label"], "Attack": r.get("attack_label") or "–",
                     "Seed": str(r["seed"]), "Status": r["status"],
                     psnr.header(): format_value(m.get(psnr.name), psnr.digits),
                     "Accuracy": format_value(m.get("accuracy"), 3),
                     "Note": r.get("skip_reason") or r.get("error") or ""})
    links = [f"cells/{quote(r['cell_id'], safe='')}.html" for r in records]
    return html_table("Every cell of the suite", "cells", rows, links={"Cell": links})
