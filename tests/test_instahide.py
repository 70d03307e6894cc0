"""InstaHide flips signs about the dataset's pixel mean, in the attack and the utility paths.

Flipping uncentred [0,1] pixels (``normalize: false``) is undone by |x̃|; the paper's code
flips normalised (centred) pixels. leakbench flips about ``ctx.centre``, the pixel mean in
model-input space, which the pipeline takes from the dataset's metadata."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.cells.utility import run_utility
from bench.contracts import ClientSpec, DefenseContext
from bench.data import input_centre
from bench.registry import DATASETS, DEFENSES
from bench.suite import attack_cells, utility_cells
from helpers import CPU, make_suite, observe_tiny, run_record

CLASSES = 5


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def instahide_batch(centre: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """InstaHide (k=4) of 3 fixed images with a fixed sampler and generator: the defended
    batch and the plain mixture (the same coefficients and partners, no flip)."""
    x, y = images(3, 0), torch.tensor([0, 1, 2])
    others = (images(9, 1), torch.arange(9) % CLASSES)
    ctx = DefenseContext(nn.Linear(1, 1), x, y, ClientSpec(), torch.Generator().manual_seed(4),
                         CLASSES, lambda n: others, centre=centre)
    defense = DEFENSES.get("instahide").cls(k=4)
    out, _ = defense.transform_batch(x, y, ctx)
    lam = defense.coefficients.float()
    mixture = lam[:, 0].view(-1, 1, 1, 1) * x
    for j in range(1, 4):
        mixture = mixture + lam[:, j].view(-1, 1, 1, 1) * others[0].view(3, 3, 3, 8, 8)[j - 1]
    return out, mixture


def test_instahide_flips_every_entry_about_the_centre():
    centre = torch.tensor([0.3, 0.5, 0.7]).view(1, 3, 1, 1)
    out, mixture = instahide_batch(centre)
    assert torch.allclose((out - centre).abs(), (mixture - centre).abs(), atol=1e-6)
    flipped = (torch.sign(out - centre) != torch.sign(mixture - centre)).float().mean()
    assert 0.35 < float(flipped) < 0.65  # 576 independent fair signs
    # the absolute value no longer gives the mixture back (it did with a flip about 0)
    assert float(((out.abs() - mixture).abs() > 0.05).float().mean()) > 0.2


def test_a_centre_of_zero_is_the_flip_of_normalised_pixels():
    normalised, _ = instahide_batch(torch.zeros(1, 3, 1, 1))
    unknown, mixture = instahide_batch(None)
    assert torch.equal(normalised, unknown)
    assert torch.allclose(unknown.abs(), mixture.abs(), atol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_the_centre_is_the_datasets_pixel_mean_in_model_input_space(normalize):
    meta = DATASETS.get("digits").cls(size=16, normalize=normalize).meta()
    assert len(meta.pixel_mean) == 1 and 0.1 < meta.pixel_mean[0] < 0.5  # mostly dark digits
    centre = input_centre(meta, torch.zeros(()))
    expected = 0.0 if normalize else meta.pixel_mean[0]
    assert centre.shape == (1, 1, 1, 1) and float(centre) == pytest.approx(expected, abs=1e-6)


def spy_on_centres(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor | None]:
    seen: list[torch.Tensor | None] = []
    cls = DEFENSES.get("instahide").cls
    original = cls.transform_batch

    def spy(self, x, y, ctx):
        seen.append(ctx.centre)
        return original(self, x, y, ctx)

    monkeypatch.setattr(cls, "transform_batch", spy)
    return seen


def test_attack_and_utility_cells_hand_instahide_the_pixel_mean(monkeypatch):
    seen = spy_on_centres(monkeypatch)
    suite = make_suite(datasets=[{"digits": {"size": 16}}], defenses=["instahide"],
                       utility={"steps": 1, "batch_size": 4, "eval_size": 10})
    pixel_mean = DATASETS.get("digits").cls(size=16).meta().pixel_mean[0]
    observe_tiny(next(iter(attack_cells(suite))))
    record = run_utility(next(iter(utility_cells(suite))), CPU)
    assert record.status == "ok", record.error
    assert len(seen) == 2
    for centre in seen:
        assert centre is not None and float(centre) == pytest.approx(pixel_mean, abs=1e-6)


def test_the_record_says_which_centre_the_signs_flipped_about():
    suite = make_suite(datasets=[{"digits": {"size": 16}}], defenses=["instahide"],
                       attacks=[{"dlg": {"steps": 1}}])
    pixel_mean = DATASETS.get("digits").cls(size=16).meta().pixel_mean[0]
    record = run_record(next(iter(attack_cells(suite))))
    assert record["status"] == "ok", record["error"]
    assert record["defense_info"]["instahide_centre"] == pytest.approx([pixel_mean], abs=1e-6)
    assert len(record["defense_info"]["instahide_coefficients"]) == record["batch_size"]


def test_text_has_no_centre():
    meta = DATASETS.get("pydoc").cls().meta()
    assert input_centre(meta, torch.zeros(())) is None
