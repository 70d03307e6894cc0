"""bench.latex: every LaTeX file leakbench writes compiles with pdflatex's defaults, whatever
the free text in it (labels, parameters, sentences), and the committed ones do."""

from __future__ import annotations

import re
import subprocess
import unicodedata

import pytest

from bench.latex import tex, tex_char
from helpers import ROOT, pdflatex, require_pdflatex


def test_specials_are_escaped_once():
    assert tex("a_b&c%{x}^~$#\\|<>[y]") == (
        "a\\_b\\&c\\%\\{x\\}\\textasciicircum{}\\textasciitilde{}\\$\\#\\textbackslash{}"
        "\\textbar{}$<$$>${[}y{]}")


def test_ascii_text_prints_as_typed_not_as_tex_ligatures():
    """A recovered sentence's ``--`` printed as an en dash, ``''`` as a curly quote, ``?` ``
    as ¿ and ``"`` as a closing quote in the committed text leaderboard's PDF (a site and
    outputs hunt): an empty group now parts each pair, and ``"`` is set in typewriter type."""
    assert tex("a--b---c ``d'' ?` !` \"e\"") == (
        "a-{}-b-{}-{}-c `{}`d'{}' ?{}` !{}` \\texttt{\"}e\\texttt{\"}")
    assert tex("– —") == "-- ---"  # typographic dashes keep their ligatures


@pytest.mark.parametrize(("ch", "expected"), [
    ("Δ", "$\\Delta$"), ("δ", "$\\delta$"), ("ε", "$\\varepsilon$"), ("μ", "$\\mu$"),
    ("Α", "A"), ("ς", "$\\varsigma$"), ("∞", "$\\infty$"), ("★", "$\\star$"),
    ("−", "-"), ("é", "é"), ("ß", "ß"), ("ą", "a"), ("ﬁ", "fi"), ("Ω", "$\\Omega$"),
    ("猫", "{[}U+732B{]}"), ("\n", " "), ("\x00", "{[}U+0000{]}"),
])
def test_each_character_has_one_spelling(ch, expected):
    assert tex_char(ch) == expected


def _sample() -> str:
    """Characters from every block a label or a claim plausibly holds: ASCII, Latin-1,
    Latin Extended-A, Greek, general punctuation, arrows, mathematical operators, symbols,
    CJK, and control characters."""
    blocks = [(0x00, 0x250), (0x370, 0x400), (0x2000, 0x2070), (0x2100, 0x2300),
              (0x2500, 0x2800), (0x4E00, 0x4E40), (0xFB00, 0xFB07)]
    return "".join(chr(cp) for lo, hi in blocks for cp in range(lo, hi)
                   if unicodedata.category(chr(cp)) not in ("Cs", "Cn"))


def test_any_text_compiles(tmp_path):
    """Δ in a defense label stopped pdflatex on the committed defenses leaderboard ("Unicode
    character not set up for use with LaTeX"); any character now compiles."""
    require_pdflatex()
    text = _sample()
    pdflatex(tmp_path, "\n\n".join(tex(text[i:i + 60]) for i in range(0, len(text), 60)))


def test_a_table_cell_may_start_with_a_bracket(tmp_path):
    require_pdflatex()
    pdflatex(tmp_path, "\\begin{tabular}{ll}\na & b \\\\\n" + tex("[UNK] x") + " & "
             + tex("[0,1]") + " \\\\\n\\end{tabular}")


def test_every_committed_latex_file_compiles_within_the_page(tmp_path):
    """The leaderboards, claims checks and tables committed under results/ (the drift tests
    prove they are what the code writes from the records), with the packages their headers
    name; no float is taller than the page and nothing runs past the line (an
    architecture's note ran 2 000 pt past it, a text scenario's caption 25 pt)."""
    require_pdflatex()
    files = sorted(ROOT.glob("results/*/*.tex"))
    assert len(files) >= 10
    for path in files:
        log = pdflatex(tmp_path, f"\\input{{{path}}}",
                       "\\usepackage{booktabs}\n\\usepackage{graphicx}")
        assert "undefined" not in log.lower(), path
        assert "Float too large" not in log, path  # paper-dlg's check ran 354 pt off the page
        over = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
        assert max(over, default=0) < 5, (path, over)  # a point or two hides in the margin
    assert "needs booktabs and graphicx" in (ROOT / "results/quick/leaderboard.tex").read_text()


def test_every_committed_leaderboard_table_has_a_label_unique_across_suites(tmp_path):
    """A paper \\inputs several suites' leaderboards and \\refs their tables: each table
    float has a \\label, none repeats within or across the committed files, and a \\ref to
    one resolves."""
    labels = []
    for path in sorted(ROOT.glob("results/*/leaderboard.tex")):
        text = path.read_text()
        found = re.findall(r"\\label\{([^}]*)\}", text)
        assert len(found) == text.count("\\begin{table}") > 0, path
        assert all(re.fullmatch(r"tab(:[a-z0-9-]+)+", k) for k in found), found
        labels += found
    assert len(labels) == len(set(labels)) >= 50
    require_pdflatex()
    quick = ROOT / "results/quick/leaderboard.tex"
    first = re.search(r"\\label\{([^}]*)\}", quick.read_text()).group(1)
    body = f"\\input{{{quick}}}\nSee Table~\\ref{{{first}}}."
    preamble = "\\usepackage{booktabs}\n\\usepackage{graphicx}"
    pdflatex(tmp_path, body, preamble)
    log = pdflatex(tmp_path, body, preamble)  # the second pass resolves the reference
    assert "undefined" not in log.lower()


def test_the_text_leaderboard_bolds_with_textbf_not_markdown():
    """The LaTeX sentence tables carried the markdown: **bold** and \\[UNK\\] escapes, as
    literal asterisks and backslashes."""
    board = (ROOT / "results" / "text" / "leaderboard.tex").read_text()
    assert not re.search(r"\*\*[a-z]+\*\*", board) and "textbackslash" not in board
    assert "\\textbf{{[}UNK{]}}" in board and "\\textbf{function}" in board


def test_pdflatex_helper_reports_a_failure(tmp_path):
    require_pdflatex()
    with pytest.raises(AssertionError):
        pdflatex(tmp_path, "Δ")
    assert subprocess.run(["true"]).returncode == 0


def test_decomposed_accents_are_composed():
    """A folder name from macOS spells é as e + U+0301: it came out as e{[}U+0301{]}."""
    assert tex("Cafe\u0301") == tex("Café") == "Café"
    assert tex("q\u0301") == "q"  # no composed form: the accent is dropped


def test_a_sentence_cell_survives_copy_and_pickle():
    import copy
    import pickle

    from bench.leaderboard.text_tables import Tokens

    cell = Tokens([("a", True), ("b_c", False)])
    for other in (copy.copy(cell), copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
        assert other == cell and other.latex() == cell.latex() == "\\textbf{a} b\\_c"
