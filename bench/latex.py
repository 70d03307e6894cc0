"""Text for pdflatex: the one escaper behind every LaTeX file leakbench writes.

Leaderboards, `leakbench table` and `leakbench check` write LaTeX fragments that a paper
``\\input``s with nothing but ``booktabs`` (and ``graphicx``, for the tables scaled to the
line) in its preamble, under pdflatex's defaults (UTF-8 input, the OT1 font encoding).
Their text is free: imagefolder labels, defense parameters (ε, δ), claims' sentences (≥, ∞).
A character LaTeX treats specially, or one its UTF-8
input has no glyph for (Δ, ∞, ★, «), stops pdflatex, so each character becomes:

- LaTeX's specials (``\\ & % _ # $ ~ ^ { } < > |``) escaped (OT1 prints ``<>|`` as ¡¿—),
  and brackets braced (a cell's leading ``[`` is not read as ``\\\\``'s optional argument);
- the symbols the tables and papers use (±, ×, ≥, →, ∞, …) and Greek letters as math;
- Latin-1 and Latin Extended-A letters that pdflatex sets up by default as they are;
- anything else as its compatibility decomposition without accents (ą → a, ﬁ → fi), else
  ``[U+XXXX]`` (a label is never lost and never stops the document);
- a tab or line break as a space (a blank line inside a table cell is an error);
- TeX's ligatures of ASCII text broken (``--`` would print an en dash, ``` `` ``` and ``''``
  curly quotes, ``?` `` and ``!` `` ¿ and ¡; a recovered sentence's ``--`` or a label's ``''``
  must print as typed), and ``"`` in typewriter type (OT1 prints it as a closing quote).

One pass, character by character: no escape is escaped again.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

BREAKS = {"|": "\\textbar\\allowbreak{}", ",": ",\\allowbreak{}", "=": "=\\allowbreak{}",
          "(": "(\\allowbreak{}"}
"""Where a long label (``pydoc(classes=4,seq_len=12,…)``, ``noise(...)|noise(...)``) may break
in a caption or a paragraph cell: a label has no spaces, and ran past the line."""

SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "_": "\\_", "#": "\\#",
           "$": "\\$", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "{": "\\{",
           "}": "\\}", "<": "$<$", ">": "$>$", "|": "\\textbar{}", "[": "{[}", "]": "{]}",
           '"': '\\texttt{"}'}

LIGATURES = {("-", "-"), ("`", "`"), ("'", "'"), ("?", "`"), ("!", "`")}
"""ASCII pairs the OT1 fonts merge into one glyph; an empty group between them keeps both."""

SYMBOLS = {
    "±": "$\\pm$", "·": "$\\cdot$", "×": "$\\times$", "÷": "$\\div$", "–": "--", "—": "---",
    "−": "-", "…": "\\ldots{}", "†": "$^\\dagger$", "‡": "$^\\ddagger$", "’": "'", "‘": "`",
    "“": "``", "”": "''", "²": "$^2$", "³": "$^3$", "¹": "$^1$", "°": "$^\\circ$",
    "≥": "$\\geq$", "≤": "$\\leq$", "≠": "$\\neq$", "≈": "$\\approx$", "≡": "$\\equiv$",
    "∼": "$\\sim$", "≪": "$\\ll$", "≫": "$\\gg$", "∝": "$\\propto$", "∞": "$\\infty$",
    "√": "$\\surd$", "∑": "$\\sum$", "∏": "$\\prod$", "∫": "$\\int$", "∂": "$\\partial$",
    "∇": "$\\nabla$", "∈": "$\\in$", "∉": "$\\notin$", "⊂": "$\\subset$", "⊆": "$\\subseteq$",
    "∩": "$\\cap$", "∪": "$\\cup$", "∅": "$\\emptyset$", "∀": "$\\forall$", "∃": "$\\exists$",
    "¬": "$\\neg$", "∧": "$\\wedge$", "∨": "$\\vee$", "⊕": "$\\oplus$", "⊗": "$\\otimes$",
    "→": "$\\rightarrow$", "←": "$\\leftarrow$", "↔": "$\\leftrightarrow$", "↑": "$\\uparrow$",
    "↓": "$\\downarrow$", "⇒": "$\\Rightarrow$", "⇐": "$\\Leftarrow$", "⇔": "$\\Leftrightarrow$",
    "★": "$\\star$", "∘": "$\\circ$", "•": "$\\bullet$", "ℓ": "$\\ell$", "ϵ": "$\\epsilon$",
    "ε": "$\\varepsilon$", "ϑ": "$\\vartheta$", "ϕ": "$\\phi$", "φ": "$\\varphi$",
    "ς": "$\\varsigma$", "ο": "o",
    "\t": " ", "\n": " ", "\r": " ",
}

# Greek letters with a TeX command; the other capitals look like Latin ones
_GREEK = {"alpha", "beta", "gamma", "delta", "zeta", "eta", "theta", "iota", "kappa", "lambda",
          "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "chi", "psi", "omega"}
_GREEK_CAPITAL = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi",
                  "Psi", "Omega"}
_LATIN_CAPITAL = {"Alpha": "A", "Beta": "B", "Epsilon": "E", "Zeta": "Z", "Eta": "H",
                  "Iota": "I", "Kappa": "K", "Mu": "M", "Nu": "N", "Omicron": "O", "Rho": "P",
                  "Tau": "T", "Chi": "X"}

# what pdflatex's UTF-8 input sets up under the default OT1 encoding (each compiled alone)
_PLAIN_RANGES = ((0xA1, 0x17E),)
_PLAIN_MISSING = {0xAB, 0xBB, 0xD0, 0xDE, 0xF0, 0xFE, 0x104, 0x105, 0x110, 0x111, 0x118, 0x119,
                  0x126, 0x127, 0x12E, 0x12F, 0x138, 0x13F, 0x140, 0x149, 0x14A, 0x14B, 0x166,
                  0x167, 0x172, 0x173}


def _greek(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    m = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", name)
    if m is None:
        return None
    letter = m.group(2).capitalize()
    if m.group(1) == "SMALL":
        return f"$\\{letter.lower()}$" if letter.lower() in _GREEK else None
    if letter in _GREEK_CAPITAL:
        return f"$\\{letter}$"
    return _LATIN_CAPITAL.get(letter)


def _plain(ch: str) -> bool:
    cp = ord(ch)
    if 0x20 <= cp < 0x7F:
        return True
    return any(lo <= cp <= hi for lo, hi in _PLAIN_RANGES) and cp not in _PLAIN_MISSING


def tex_char(ch: str) -> str:
    """One character as pdflatex input (see the module docstring)."""
    if ch in SPECIAL:
        return SPECIAL[ch]
    if ch in SYMBOLS:
        return SYMBOLS[ch]
    if _plain(ch):
        return ch
    greek = _greek(ch)
    if greek is not None:
        return greek
    stripped = "".join(c for c in unicodedata.normalize("NFKD", ch)
                       if not unicodedata.combining(c))
    if stripped and stripped != ch and all(_plain(c) or c in SPECIAL for c in stripped):
        return "".join(SPECIAL.get(c, c) for c in stripped)
    return f"{{[}}U+{ord(ch):04X}{{]}}"


def tex(s: str, extra: Mapping[str, str] | None = None) -> str:
    """``s`` as pdflatex text: composed (NFC: a folder name from macOS spells é as e and a
    combining accent), every character through ``extra`` (a caller's spellings, e.g. break
    points) or else :func:`tex_char`, in one pass; an accent left without a composed form is
    dropped. A leading ``*`` (spaces before it too) gets an empty group before it: after a
    row's ``\\\\`` (spaces and the line break skipped) LaTeX reads it as ``\\\\*`` and the star
    is lost."""
    extra = extra or {}
    text = unicodedata.normalize("NFC", s)
    out = ["{}"] if text.lstrip().startswith("*") and "*" not in extra else []
    for i, ch in enumerate(text):
        out.append(extra.get(ch) or ("" if unicodedata.combining(ch) else tex_char(ch)))
        if (ch, text[i + 1:i + 2]) in LIGATURES and ch not in extra:
            out.append("{}")
    return "".join(out)


def shrink_to_line(tabular: str) -> str:
    """A ``tabular`` scaled down to the line where it is wider, kept at its size where it is
    narrower (a wide table stays legible in the PDF's zoom); needs graphicx."""
    return ("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            + tabular + "}")


def label_slug(*parts: str) -> str:
    """A ``\\label`` key of ``parts``: lower-case letters, digits and ``-``, parts joined by
    ``:`` (\\label takes any text, but a paper's \\ref and a pandoc anchor take these)."""
    return ":".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)
