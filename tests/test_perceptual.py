"""LPIPS (torchmetrics) and FID/KID (torch-fidelity) with weights files made here.

The weight files are random-initialised networks saved under the exact names and formats the
libraries load (torchvision's AlexNet state dict; torch-fidelity's Inception state dict), so the
real loading and metric code runs; no test downloads anything (every download entry point
records the attempt and fails).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import perceptual
from bench.perceptual import (
    FID_ENV,
    FID_WEIGHTS_FILE,
    HUB_WORDS,
    LPIPS_ENV,
    fid_kid,
    fid_status,
    kid_subsets,
    lpips_per_image,
    lpips_setting,
    lpips_status,
    perceptual_metrics,
)

ALEX_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(autouse=True)
def downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """An empty TORCH_HOME, no weights variables, and a record of any download attempt."""
    attempts: list[str] = []

    def refuse(url: object = "", *args: object, **kwargs: object) -> None:
        attempts.append(str(url))
        raise RuntimeError("no downloads in tests")

    import urllib.request

    import torch_fidelity.feature_extractor_inceptionv3 as inception
    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(inception, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(LPIPS_ENV, raising=False)
    monkeypatch.delenv(FID_ENV, raising=False)
    return attempts


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random AlexNet in torchvision's state-dict format (the `features.*` part LPIPS uses)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("alex") / ALEX_FILE
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return path


def images(seed: int, n: int, channels: int = 3, side: int = 32, scale: float = 1.0
           ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, side // 4, side // 4, generator=g)  # blobs, not just noise
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")
    return (smooth * scale).clamp(0, 1)


def hub_install(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / path.name).symlink_to(path)


# --- LPIPS ----------------------------------------------------------------------------------------


def test_lpips_from_the_hub_cache(alexnet_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path, downloads: list[str]) -> None:
    hub_install(alexnet_weights, monkeypatch, tmp_path)
    ok, message = lpips_status()
    assert ok and str(tmp_path / "torch-home") in message
    a, b = images(1, 3), images(2, 3)
    same = lpips_per_image(a, a)
    diff = lpips_per_image(a, b)
    back = lpips_per_image(b, a)
    assert same is not None and diff is not None and back is not None
    assert len(same) == 3 and max(abs(v) for v in same) < 1e-6
    assert min(diff) > 1e-3
    assert back == pytest.approx(diff, rel=1e-4)
    near = lpips_per_image(a, (a + 0.02).clamp(0, 1))
    assert near is not None and all(n < d for n, d in zip(near, diff))
    # the linear calibration layers are torchmetrics' shipped ones (non-negative), not random
    model = perceptual._lpips_model("alex", perceptual._file_key(alexnet_weights))
    assert all(float(lin.model[1].weight.min()) >= 0 for lin in model.lins)
    assert downloads == []


def test_lpips_grey_small_images_and_env_or_argument(alexnet_weights: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    grey_a, grey_b = images(3, 2, channels=1, side=16), images(4, 2, channels=1, side=16)
    assert lpips_per_image(grey_a, grey_b) is None  # not in the (empty) hub cache
    monkeypatch.setenv(LPIPS_ENV, str(alexnet_weights))
    ok, message = lpips_status()
    assert ok and str(alexnet_weights) in message
    grey = lpips_per_image(grey_a, grey_b)  # 16×16 grey: upsampled to 64 px, 3 channels
    rgb = lpips_per_image(grey_a.repeat(1, 3, 1, 1), grey_b.repeat(1, 3, 1, 1))
    assert grey is not None and len(grey) == 2 and min(grey) > 0
    assert grey == pytest.approx(rgb, rel=1e-5)
    monkeypatch.delenv(LPIPS_ENV)
    assert lpips_per_image(grey_a, grey_b, weights=str(alexnet_weights)) == pytest.approx(grey)
    ok, message = lpips_status(weights=str(alexnet_weights.parent / "absent.pth"))
    assert not ok and "absent.pth" in message


def test_the_record_names_the_lpips_backbone_it_was_scored_with(
        alexnet_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backbone is outside the cell id: a resume and ``rerun`` read it from the record."""
    monkeypatch.setenv(LPIPS_ENV, str(alexnet_weights))
    a, b = images(5, 2), images(6, 2)
    scored = perceptual_metrics(a, b, [1, 0], {"lpips": True, "lpips_net": "alex"})
    assert scored["lpips"] is not None and scored["lpips_scoring"] == {"net": "alex"}
    assert lpips_setting(scored) == "alex"
    off = perceptual_metrics(a, b, [1, 0], {"lpips": False})
    assert lpips_setting(off) == "off" and "lpips_scoring" not in off


def test_lpips_not_available_without_weights(tmp_path: Path, downloads: list[str]) -> None:
    ok, message = lpips_status()
    assert not ok and "\n" not in message
    assert message.startswith("LPIPS n/a") and ALEX_FILE in message and LPIPS_ENV in message
    # where, in words: a record's note names no machine's home folder (as FID's)
    assert HUB_WORDS in message and str(tmp_path) not in message
    assert lpips_per_image(images(1, 2), images(2, 2)) is None
    broken = tmp_path / ALEX_FILE
    broken.write_bytes(b"not a checkpoint")
    ok, message = lpips_status(weights=str(broken))
    assert not ok and "could not be loaded" in message and "\n" not in message
    assert downloads == []


# --- FID / KID ------------------------------------------------------------------------------------


def test_fid_kid_small_layer(inception_weights: Path, monkeypatch: pytest.MonkeyPatch,
                             tmp_path: Path, downloads: list[str]) -> None:
    """Cheap layer ("64"): the same code path as the default, 2048-d layer, fast on a CPU."""
    monkeypatch.setenv(FID_ENV, str(inception_weights))
    a, b = images(1, 10), images(2, 10, scale=0.4)
    same = fid_kid(a, a, feature_layer="64")
    diff = fid_kid(a, b, feature_layer="64")
    assert same["reason"] is None and diff["reason"] is None and same["n"] == 10
    assert abs(same["fid"]) < 1e-6 * diff["fid"]
    assert diff["fid"] > 0 and diff["kid"] > 0 and diff["kid_std"] >= 0
    assert diff["kid"] > 10 * abs(same["kid"])
    # the spread of half-subsets, not of the whole group in 100 orders (rounding, ~1e-16)
    assert diff["kid_std"] > 1e-3 * diff["kid"]
    # nothing was cached: a third group gives its own value, and no cache folder appeared
    other = fid_kid(a, images(3, 10, scale=0.7), feature_layer="64")
    assert 0 < other["fid"] < diff["fid"]
    assert not (tmp_path / "torch-home" / "fidelity_cache").exists()
    assert downloads == []


def test_fid_kid_default_layer(inception_weights: Path) -> None:
    """The standard 2048-d pool features, on a small group of grey images."""
    a = images(5, 4, channels=1)
    result = fid_kid(a, a, weights=str(inception_weights), min_group=4)
    assert result["reason"] is None and result["feature_layer"] == "2048"
    assert abs(result["fid"]) < 1e-3
    # two random halves of one set share an image with probability 1/n a draw, so the mean of
    # their unbiased MMD² is (2/n)·(mean k(x,x') − mean k(x,x)) ≤ 0 in expectation
    assert result["kid"] <= 1e-9


def test_fid_kid_not_available(tmp_path: Path, inception_weights: Path,
                               downloads: list[str]) -> None:
    a = images(1, 12)
    missing = fid_kid(a, a)
    assert missing["fid"] is None and missing["kid"] is None and missing["n"] == 12
    reason = missing["reason"]
    assert reason.startswith("FID/KID n/a") and FID_WEIGHTS_FILE in reason and FID_ENV in reason
    assert "\n" not in reason
    ok, message = fid_status()
    assert not ok and message == reason
    small = fid_kid(a[:5], a[:5], weights=str(inception_weights))
    assert small["fid"] is None and "5 images" in small["reason"] and "10" in small["reason"]
    broken = tmp_path / FID_WEIGHTS_FILE
    broken.write_bytes(b"not a checkpoint")
    bad = fid_kid(a, a, weights=str(broken))
    assert bad["fid"] is None and "torch-fidelity failed" in bad["reason"]
    assert downloads == []


@pytest.mark.parametrize("n, size", [(4, 2), (5, 2), (10, 5), (1000, 500), (2000, 1000),
                                     (50_000, 1000)])
def test_kid_draws_halves_so_its_std_is_a_sampling_error(n: int, size: int) -> None:
    assert kid_subsets(n) == {"kid_subsets": 100, "kid_subset_size": size}
