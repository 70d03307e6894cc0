"""The leaderboard's text tables: attacks and defenses per text scenario, ranked by ROUGE-1,
and the sentences themselves (original beside recovered, correct tokens in bold) instead of
the image tables' pictures."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.latex import tex
from bench.leaderboard.aggregate import (
    TEXT_HEADLINE,
    headline,
    rank_attacks,
    rank_defenses,
    scenario_summaries,
    strongest_attacks,
)
from bench.leaderboard.epsilon import epsilon_cell, epsilon_column, epsilon_note
from bench.leaderboard.frames import scenario_title
from bench.leaderboard.notes import missing_note
from bench.leaderboard.tables import (
    Table,
    _cell,
    _converged,
    attack_note,
    reference_notes,
    scored_metrics,
    utility_cells,
    utility_join,
    utility_note,
)
from bench.leaderboard.uncertainty import format_rank
from bench.markdown import Markdown
from bench.metrics import Metric, fixed, format_value, get_metric, list_metrics
from bench.registry import LeakbenchError

SENTENCES_SHOWN = 4  # original/recovered pairs shown per cell

TEXT_FLOOR = "the score of an empty guess: every position [PAD]"


def text_headline() -> type[Metric]:
    return get_metric(TEXT_HEADLINE)


def modality_headline(modality: str) -> type[Metric]:
    """The metric a scenario of ``modality`` is ranked by: ROUGE-1 for text, else PSNR."""
    return text_headline() if modality == "text" else headline()


def records_metric(df: pd.DataFrame, chosen: type[Metric] | None, flag: str) -> type[Metric]:
    """The metric a command reads off the records of ``df``: ``chosen``, or their leaderboard
    metric (one modality); a metric that no record can have is refused (``flag`` names the
    option), instead of a table of n/a."""
    modalities = sorted(set(df["modality"]))
    if chosen is None:
        if len(modalities) > 1:
            raise LeakbenchError(f"the records are image and text: name the {flag}")
        return modality_headline(modalities[0])
    if chosen.modality not in modalities:
        raise LeakbenchError(f"{flag} {chosen.name}: a metric of {chosen.modality} cells, and "
                             f"the records are {' and '.join(modalities)} cells (default: "
                             f"{modality_headline(modalities[0]).name})")
    return chosen


def text_metrics(summary: pd.DataFrame) -> list[type[Metric]]:
    """The text tables' metric columns: the per-item text metrics some row of ``summary``
    has a value for (:func:`bench.leaderboard.tables.scored_metrics`)."""
    return scored_metrics([m for m in list_metrics("text", "per_item") if m.leaderboard],
                          summary, text_headline())


def rule_metric_words(name: Any) -> tuple[str, str]:
    """A success rule's metric as a table says it: its label and unit, or, for a plug-in
    metric not installed here, its name (the records still render)."""
    try:
        m = get_metric(name)
    except LeakbenchError:
        return str(name), ""
    return m.label, m.unit or ""


def protocol_text(df: pd.DataFrame) -> list[str]:
    """The text cells' protocol paragraph."""
    rules = set()
    for r in df["success_rule"] if "success_rule" in df else []:
        if not isinstance(r, dict):
            continue
        label, _ = rule_metric_words(r.get("metric"))
        if r.get("at_least") is not None:
            rules.add(f"{label} ≥ {r['at_least']:g}")
        elif r.get("at_most") is not None:
            rules.add(f"{label} ≤ {r['at_most']:g}")
    rules = sorted(rules)
    return [
        "Text protocol: each cell draws a batch of sentences (token ids) and a victim model "
        "from its seed; the attack returns token ids. Recovered sequences are matched "
        "one-to-one to the originals (Hungarian on ROUGE-1, as LAMP and DAGER match them; "
        "ties by the positions that agree) and scored per "
        "sequence, [PAD] left out: token accuracy (the original's tokens recovered at their "
        "position), exact match, and ROUGE-1/2/L F-measures (`rouge-score`). Means over every "
        "seed run ± 95% Student-t half-widths (token accuracy and exact match, shares: [95% "
        "Wilson intervals]), failed seeds at an empty guess's score. "
        f"A run succeeds when its mean {' or '.join(rules) or 'ROUGE-1 ≥ 0.5'}.",
    ]


def attack_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    h = text_headline()
    unstable = bool((summary["n_ok"] < summary["n"]).any())  # as the image tables
    shown = text_metrics(summary)
    rows = []
    for _, r in rank_attacks(summary, h).iterrows():
        row: dict[str, Any] = {"Defense": r["defense"],
                               "Rank": format_rank(r["rank_best"], r["rank_worst"]),
                               "Attack": r["attack"], "n": int(r[f"{h.name}_n"])}
        for m in shown:
            row[m.header()] = _cell(m, r)
            if m.name == h.name and unstable:
                row[f"{m.header()} converged only"] = _converged(h, r)
        row.update({"Success": f"{r['n_success']}/{r['n_attacked']}",
                    "Median time (s)": format_value(r["time"], 2),
                    "Grad evals": format_value(r["grad_evals"], 0),
                    "Diverged": int(r["diverged"]), "Failed": int(r["failed"])})
        rows.append(row)
    return rows


def defense_rows(summary: pd.DataFrame, util: pd.DataFrame | None = None, key: tuple = (),
                 g: pd.DataFrame | None = None
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame | None, str]:
    """One row per defense, by its strongest attack; with the utility track's columns where
    ``util`` holds runs of the scenario ``key``'s dataset and architecture (their summary is
    returned beside the rows, None where there are none), and ε where a defense of the
    scenario's records ``g`` reports one (the note on it is returned last: the text tables
    had shown no ε, DP-SGD's included)."""
    h = text_headline()
    best = rank_defenses(strongest_attacks(summary, h), h)
    unstable = bool((best["n_ok"] < best["n"]).any())
    shown = text_metrics(best)
    best, us, front = utility_join(best, util, key, h.name)
    g = pd.DataFrame() if g is None else g
    epsilon, eps_column = epsilon_column(best, g, us is not None)
    rows = []
    for _, r in best.iterrows():
        row: dict[str, Any] = {"Rank": format_rank(r["rank_best"], r["rank_worst"]),
                               "Defense": r["defense"], "Strongest attack": r["attack"],
                               "n": int(r[f"{h.name}_n"])}
        for m in shown:
            row[m.header()] = _cell(m, r)
            if m.name == h.name and unstable:
                row[f"{m.header()} converged only"] = _converged(h, r)
        row.update({"Success": f"{r['n_success']}/{r['n_attacked']}",
                    "Attacks tried": int(r["attacks"])})
        if len(epsilon):
            row[eps_column] = epsilon_cell(epsilon, r["defense"])
        if us is not None:
            row.update(utility_cells(r, front))
        rows.append(row)
    return rows, us, epsilon_note(epsilon, eps_column, g, rows)


def md_token(token: str) -> str:
    """A token safe inside a markdown table cell."""
    for ch in "\\|*_`<[]":
        token = token.replace(ch, "\\" + ch)
    return token


def token_marks(pair: dict[str, Any]) -> list[tuple[str, bool]]:
    """The recovered tokens of one ``text_pairs`` entry, each with whether it is the
    original's token at its position (the markdown's bold, the site's mark); none past the
    original's end (records before that rule marked a [PAD] there correct)."""
    end = len(pair["original"])
    return [(str(t), bool(ok) and k < end)
            for k, (t, ok) in enumerate(zip(pair["recovered"], pair["correct"]))]


class Tokens(Markdown):
    """A sentence cell: its markdown (the ``str``; bold tokens in ``**``), and its tokens with
    their marks, from which :meth:`latex` writes the LaTeX (``\\textbf``) instead of
    escaping the markdown's asterisks and backslashes."""

    marks: tuple[tuple[str, bool], ...]

    def __new__(cls, marks: list[tuple[str, bool]]) -> Tokens:
        cell = super().__new__(cls, " ".join(f"**{md_token(t)}**" if ok else md_token(t)
                                             for t, ok in marks))
        cell.marks = tuple(marks)
        return cell

    def __reduce__(self) -> tuple[type, tuple[list[tuple[str, bool]]]]:  # copy, pickle
        return Tokens, (list(self.marks),)

    def latex(self) -> str:
        return " ".join(f"\\textbf{{{tex(t)}}}" if ok else tex(t) for t, ok in self.marks)


def marked(pair: dict[str, Any]) -> Tokens:
    """The recovered tokens, each in bold when it is the original's token at its position."""
    return Tokens(token_marks(pair))


def cell_caption(which: str, r: pd.Series) -> str:
    """e.g. "best, seed 0, ROUGE-1 1.000"."""
    h = text_headline()
    return f"{which}, seed {r['seed']}, {h.label} {fixed(r[h.name], h.digits)}"


def sentence_picks(cells: pd.DataFrame) -> list[tuple[str, str, str, pd.Series]]:
    """(defense, attack, "best"/"worst", cell) for the best and the worst finished cell (by
    ROUGE-1, ties by cell id) of each defense · attack that kept its sentences."""
    h = text_headline()
    ok = cells[(cells["status"] == "ok") & cells["text_pairs"].notna()]
    picks = []
    for (defense, attack), g in ok.groupby(["defense", "attack"], sort=True):
        ordered = g.sort_values([h.name, "cell_id"], ascending=[False, True], kind="stable")
        picks.append((defense, attack, "best", ordered.iloc[0]))
        if len(ordered) > 1:
            picks.append((defense, attack, "worst", ordered.iloc[-1]))
    return picks


def scenario_sentences(g: pd.DataFrame) -> pd.DataFrame:
    """The cells of one scenario whose sentences are shown: against no defense where there
    are such cells, else all."""
    return g[g["defense"] == "none"] if (g["defense"] == "none").any() else g


def sentences_scope(shown: pd.DataFrame) -> str:
    """What the sentences table's note says it shows (:func:`scenario_sentences`): it had said
    "against no defense" over defended cells where no cell ran undefended."""
    if (shown["defense"] == "none").all():
        return "Against no defense"
    return "No cell ran without a defense, so against each defense"


def sentence_rows(cells: pd.DataFrame) -> list[dict[str, str]]:
    """Original beside recovered for the best and the worst finished cell (by ROUGE-1) of
    each attack against no defense, and of the strongest attack against each defense."""
    rows = []
    for defense, attack, which, r in sentence_picks(cells):
        for i, pair in enumerate(r["text_pairs"][:SENTENCES_SHOWN]):
            rows.append({"Defense": defense, "Attack": attack,
                         "Cell": cell_caption(which, r) if i == 0 else "",
                         "Original": Tokens([(str(t), False) for t in pair["original"]]),
                         "Recovered (bold: correct token)": marked(pair)})
    return rows


def text_tables(df: pd.DataFrame, util: pd.DataFrame | None = None) -> list[Table]:
    """Per text scenario: attacks (ranked by ROUGE-1 per defense), defenses (by their
    strongest attack's ROUGE-1, with the utility track's accuracy where ``util`` has it), and
    sentences side by side."""
    h = text_headline()
    tables = []
    for key, g, summary in scenario_summaries(df):
        title = scenario_title(key)
        columns = text_metrics(summary)
        missing = missing_note(summary, columns)  # seeds left out of n: say so
        converged = "" if (summary["n_ok"] == summary["n"]).all() else (
            f" {h.label} converged only: the mean over finished seeds alone (n of them), "
            "shown where a seed diverged or failed.")
        for_attacks, for_defenses = reference_notes(summary)
        tables.append(Table(f"Text attacks · {title}", pd.DataFrame(attack_rows(summary)),
                            note=attack_note(columns, TEXT_FLOOR, f"Rank (by {h.label})")
                            + missing + converged + for_attacks))
        rows, us, eps_note = defense_rows(summary, util, key, g)
        tables.append(Table(f"Text defenses · {title}", pd.DataFrame(rows),
                            note=f"Ranked by the best mean {h.label} any attack reaches "
                                 "(lower is better), over every seed run (failures at their "
                                 "floor); n: its seeds; ± and the shared ranks as in the "
                                 "Text attacks table; the metrics and Success are that "
                                 "strongest attack's." + missing_note(strongest_attacks(summary, h))
                                 + for_defenses + eps_note
                                 + ("" if us is None else utility_note(us, h.label))))
        shown = scenario_sentences(g)
        sentences = sentence_rows(shown)
        if sentences:
            examples = [(f"{defense} · {attack}: {cell_caption(which, r)}", r["cell_id"])
                        for defense, attack, which, r in sentence_picks(shown)]
            tables.append(Table(f"Sentences · {title}", pd.DataFrame(sentences),
                                examples=examples,
                                note=f"{sentences_scope(shown)}: the best and the worst "
                                     "seed of each attack by ROUGE-1, each original sentence "
                                     "(its first "
                                     "tokens) beside its matched recovery; bold: the "
                                     "recovered token is the original's at that position."))
    return tables
