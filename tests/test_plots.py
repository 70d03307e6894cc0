"""Report figures: valid PNGs of the expected size, byte-identical re-renders, the Pareto front."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bench.plots import DPI, FIGSIZE, pareto_front, plot_privacy_utility, plot_psnr_vs_strength

SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def utility_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "defense_label": ["none", "prune(p=0.3)", "prune(p=0.9)", "noise(σ=0.01)",
                          "noise(σ=0.1)", "dpsgd(ε=8)", "broken"],
        "accuracy": [0.90, 0.88, 0.70, 0.85, 0.60, 0.70, float("nan")],
        "psnr": [45.0, 12.0, 9.0, 30.0, 11.0, 10.0, 5.0],
    })


def test_pareto_front_by_hand() -> None:
    # none: best accuracy → front. prune(0.3): 0.88/12 beats noise(0.01) 0.85/30 → front.
    # prune(0.9): 0.70/9 is the lowest PSNR → front; dpsgd 0.70/10 has the same accuracy and a
    # higher PSNR → dominated; noise(0.1) 0.60/11 is dominated by prune(0.9); "broken" has no
    # accuracy → never on the front.
    assert pareto_front(utility_frame()) == ["prune(p=0.9)", "prune(p=0.3)", "none"]


def test_pareto_front_ties_and_single_point() -> None:
    tie = pd.DataFrame({"defense_label": ["a", "b", "c"], "accuracy": [0.5, 0.5, 0.4],
                        "psnr": [10.0, 10.0, 10.0]})
    assert pareto_front(tie) == ["a", "b"]  # identical points both stay; c is dominated
    one = pd.DataFrame({"defense_label": ["only"], "accuracy": [0.1], "psnr": [50.0]})
    assert pareto_front(one) == ["only"]
    empty = pd.DataFrame({"defense_label": [], "accuracy": [], "psnr": []})
    assert pareto_front(empty) == []


def test_pareto_front_compares_means_as_printed() -> None:
    # the defenses suite's case: sign 5.9996 dB and soteria 6.0002 dB both read 6.00, and
    # soteria's accuracy is higher, so soteria dominates sign as the table prints them
    df = pd.DataFrame({"defense_label": ["sign", "soteria"], "accuracy": [0.500, 0.919],
                       "psnr": [5.9996, 6.0002]})
    assert pareto_front(df) == ["soteria"]
    assert pareto_front(df, digits=(3, 4)) == ["sign", "soteria"]  # 6.0000 < 6.0002
    # accuracy too: 0.9194 and 0.9186 both read 0.919, so the lower PSNR alone decides
    close = pd.DataFrame({"defense_label": ["a", "b"], "accuracy": [0.9194, 0.9186],
                          "psnr": [12.0, 11.0]})
    assert pareto_front(close) == ["b"]


def strength_frame() -> pd.DataFrame:
    rows = []
    for s, p in ((0.0, 44.0), (1e-4, 40.0), (1e-3, 31.0), (1e-2, 14.0), (1e-1, 8.0)):
        rows.append({"defense": "noise", "strength": s, "psnr": p})
    for s, p in ((0.1, 40.0), (0.5, 20.0), (0.9, 9.0)):
        rows.append({"defense": "prune", "strength": s, "psnr": p})
    rows.append({"defense": "prune", "strength": 0.7, "psnr": math.nan})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["utility", "strength"])
def test_png_is_valid_and_byte_identical(tmp_path: Path, kind: str) -> None:
    if kind == "utility":
        def draw(path: Path) -> Path:
            return plot_privacy_utility(utility_frame(), path, "privacy vs utility (LeNet, CIFAR)")
    else:
        def draw(path: Path) -> Path:
            return plot_psnr_vs_strength(strength_frame(), path, "PSNR vs strength")
    first = draw(tmp_path / "a" / "fig.png")
    second = draw(tmp_path / "b" / "fig.png")
    assert first == tmp_path / "a" / "fig.png" and first.is_file()
    with Image.open(first) as im:
        im.verify()
    with Image.open(first) as im:
        assert im.format == "PNG" and im.size == SIZE
        extrema = im.convert("L").getextrema()
        assert extrema[0] < 100 < extrema[1]  # something was drawn on the white canvas
    assert first.read_bytes() == second.read_bytes()
    assert b"Software" not in first.read_bytes()


def test_log_axis_only_for_wide_ranges(tmp_path: Path) -> None:
    narrow = strength_frame()[lambda d: d["defense"] == "prune"]
    a = plot_psnr_vs_strength(narrow, tmp_path / "narrow.png", "narrow")
    b = plot_psnr_vs_strength(strength_frame(), tmp_path / "wide.png", "narrow")
    assert a.read_bytes() != b.read_bytes()
    from bench.plots import _log_span

    assert not _log_span([0.1, 0.5, 0.9]) and _log_span([0.0, 1e-4, 1e-1])
    assert not _log_span([0.0, 1.0])


def test_labels_with_dollars_and_carets_are_plain_text(tmp_path: Path) -> None:
    """A label is free text (an imagefolder's folder): "p$x^{$q" was parsed as mathtext and
    failed the whole leaderboard."""
    frame = utility_frame().assign(defense_label=lambda d: d["defense_label"] + " p$x^{$q")
    assert plot_privacy_utility(frame, tmp_path / "u.png", "in p$x^{$q").is_file()
    strength = strength_frame().assign(defense=lambda d: d["defense"] + "$^")
    assert plot_psnr_vs_strength(strength, tmp_path / "s.png", "$x^{").is_file()


def test_a_plot_that_fails_half_way_leaves_the_old_file(tmp_path):
    """Plots were drawn straight into their file: a run killed while its leaderboard was
    drawn left a truncated PNG (a runner review). They are written atomically now."""
    from matplotlib.figure import Figure

    from bench.plots import _save

    path = tmp_path / "plots" / "p.png"
    path.parent.mkdir()
    path.write_bytes(b"the old plot")

    class Broken(Figure):
        def savefig(self, target, **kwargs):
            data = b"\x89PNG half"
            if hasattr(target, "write"):
                target.write(data)
            else:
                Path(target).write_bytes(data)
            raise RuntimeError("killed while drawing")

    with pytest.raises(RuntimeError):
        _save(Broken(), path)
    assert path.read_bytes() == b"the old plot"
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.png"]
