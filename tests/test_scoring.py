from __future__ import annotations

import pytest
import torch

from bench.scoring import PSNR_CAP_DB, denormalize, label_accuracy, match, score


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_permuted_reconstruction_is_matched_one_to_one():
    x = _images()
    perm = torch.tensor([2, 0, 3, 1])
    m = score(x, torch.tensor([0, 1, 2, 3]), x[perm], None, 20.0)
    assert m["psnr"] == PSNR_CAP_DB and m["ssim"] == pytest.approx(1.0)
    assert [perm[i] for i in m["matching"]] == [0, 1, 2, 3]
    assert m["label_acc"] is None and m["success"]


def test_matching_never_reuses_a_reconstruction():
    x = _images()
    # every reconstruction is a copy of image 0: with replacement all would match image 0
    recon = x[0:1].repeat(4, 1, 1, 1)
    order = match(x, recon)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    m = score(x, torch.zeros(4, dtype=torch.long), recon, None, 20.0)
    assert m["psnr_worst"] < 20 < PSNR_CAP_DB and m["psnr"] < PSNR_CAP_DB


@pytest.mark.parametrize("block", [1, 3 * 256 * 5, 1 << 24])
def test_pairwise_mse_in_blocks_is_every_pair_at_once(block, monkeypatch):
    """The blocks of rows (one row, five rows, all) give what the N×N×D differences at once
    gave, which had needed 13 GB at batch 1 024 of 32×32 colour images."""
    import bench.scoring
    from bench.scoring import pairwise_mse

    a, b = _images(12, 1), _images(12, 2)
    every = ((a.flatten(1)[:, None, :] - b.flatten(1)[None, :, :]) ** 2).mean(-1)
    monkeypatch.setattr(bench.scoring, "PAIRWISE_BLOCK", block * 12)
    assert torch.allclose(pairwise_mse(a, b), every, rtol=1e-6, atol=0)
    assert pairwise_mse(a[:0], b).shape == (0, 12)


def test_fewer_or_more_reconstructions_than_originals_are_refused():
    """Matching is one-to-one: with 3 reconstructions for 4 originals one original had no
    match, and its entry was uninitialised memory (a reconstruction reused, or an index
    error quoting a pointer)."""
    x = _images()
    for recon in (x[:3], torch.cat([x, x[:1]])):
        with pytest.raises(ValueError, match="reconstructions for 4 originals"):
            match(x, recon)
        with pytest.raises(ValueError, match="does not match the batch"):
            score(x, torch.zeros(4, dtype=torch.long), recon, None, 20.0)


def test_psnr_and_mse_follow_their_definitions():
    x = torch.full((1, 1, 16, 16), 0.5)
    y = x + 0.1
    m = score(x, torch.tensor([0]), y, None, 20.0)
    assert m["mse"] == pytest.approx(0.01)
    assert m["psnr"] == pytest.approx(20.0)


def test_scores_are_computed_on_denormalised_clamped_images():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x01 = _images(2)
    normalised = (x01 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(denormalize(normalised, mean, std), x01, atol=1e-6)
    wild = normalised * 100  # far outside the pixel box
    back = denormalize(wild, mean, std)
    assert back.min() >= 0 and back.max() <= 1


def test_ssim_is_the_standard_gaussian_ssim():
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    x = _images(2, 1)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    m = score(x, torch.tensor([0, 1]), y, None, 20.0)
    ref = ssim(y.double(), x.double(), data_range=1.0, reduction="none")
    assert m["per_image"]["ssim"] == pytest.approx(ref.tolist(), abs=1e-9)
    assert 0 < m["ssim"] < 1


def test_label_accuracy_ignores_order():
    true = torch.tensor([1, 1, 2, 3])
    assert label_accuracy(true, torch.tensor([3, 2, 1, 1])) == 1.0
    assert label_accuracy(true, torch.tensor([1, 2, 2, 3])) == 0.75
    assert label_accuracy(true, torch.tensor([0, 0, 0, 0])) == 0.0


def test_extra_labels_count_against_label_accuracy():
    """Every class returned B times covers any batch's multiset: over the batch size it read
    1.00; over the number of guesses it is their hit rate."""
    true = torch.tensor([0, 1, 2, 3])
    assert label_accuracy(true, torch.arange(8).repeat(4)) == 4 / 32
    assert label_accuracy(true, torch.tensor([3, 2, 1, 0])) == 1.0
    assert label_accuracy(true, torch.tensor([0, 1])) == 0.5  # fewer: over the batch


def _ssim_map(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5
              ) -> torch.Tensor:
    """The Gaussian SSIM map (Wang et al. 2004; K1 0.01, K2 0.03, data range 1) of images
    reflect-padded by half a window, one value per pixel and channel."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).outer(g / g.sum())
    c = x.shape[1]
    w = g.expand(c, 1, size, size)
    pad = size // 2

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.pad(z, (pad, pad, pad, pad), mode="reflect")
        return torch.nn.functional.conv2d(z, w, groups=c)

    x, y = x.double(), y.double()
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def test_ssim_averages_the_whole_reflect_padded_map():
    """torchmetrics before 1.4.2 cropped the border (as skimage does): an error only in a
    3-pixel border strip then hardly counted. The records' SSIM is the whole-map one,
    checked against an independent implementation; pyproject requires torchmetrics ≥ 1.4.2
    and provenance records its version."""
    from bench.metrics.ssim import ssim_per_image

    x = _images(2, 5)
    y = x.clone()
    y[:, :, :3, :] = 1 - y[:, :, :3, :]  # the error lies in the border strip alone
    got = ssim_per_image(x, y)
    whole = _ssim_map(y, x)
    assert got.tolist() == pytest.approx(whole.flatten(1).mean(1).tolist(), abs=1e-9)
    cropped = whole[..., 5:-5, 5:-5].flatten(1).mean(1)  # torchmetrics < 1.4.2, skimage
    assert (got < 0.9).all() and (cropped > got + 0.05).all()
