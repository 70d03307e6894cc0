"""Perceptual metrics from kept libraries, with weights found locally and never downloaded.

- **LPIPS** (Zhang et al., CVPR 2018, "The unreasonable effectiveness of deep features as a
  perceptual metric"): torchmetrics' implementation. Its linear calibration layers ship inside
  the torchmetrics package; the ImageNet backbone (AlexNet by default) is torchvision's weights
  file, looked for in this order:

  1. the ``weights`` argument;
  2. the environment variable ``LEAKBENCH_LPIPS_WEIGHTS``;
  3. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (``~/.cache/torch/hub/checkpoints``),
     under torchvision's own file name (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
     ``squeezenet1_1-b8a52dc0.pth``).

  Images whose shorter side is below 64 px (MNIST, CIFAR) are bilinearly upsampled so that it
  is 64 px before the backbone sees them, as torch-fidelity's LPIPS does: AlexNet's five layers
  need about 32 px to keep a spatial map at all. Values at 32 px are therefore comparable with
  each other, not with LPIPS computed at another resolution. Grey images repeat to 3 channels.

- **FID** (Heusel et al., NeurIPS 2017) and **KID** (Bińkowski et al., ICLR 2018): torch-fidelity
  with its ``inception-v3-compat`` feature extractor (2048-d pool features, the TensorFlow
  Inception weights converted by torch-fidelity), comparing a pooled group of reconstructions
  with the originals of the same cells. The weights file
  ``weights-inception-2015-12-05-6726825d.pth`` comes from the ``weights`` argument,
  ``LEAKBENCH_FID_WEIGHTS``, or the torch hub cache (where torch-fidelity's own download would
  have put it). torch-fidelity's on-disk cache is off, so no stale features come back. FID on
  few images is biased upwards (a 2048×2048 covariance from N samples); compare FID values only
  between groups of equal size. KID is unbiased but noisy for small groups.

Nothing here downloads: a missing file makes the metric "n/a" with a one-line reason.
"""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from bench.paths import expanded

LPIPS_ENV = "LEAKBENCH_LPIPS_WEIGHTS"
FID_ENV = "LEAKBENCH_FID_WEIGHTS"
FID_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
FID_LAYER = "2048"  # the Inception pool3 features of the FID/KID papers
FID_LAYERS = ("64", "192", "768", "2048")
LPIPS_MIN_SIDE = 64  # shorter side the backbone sees (upsampled below that)
LPIPS_CHUNK = 64  # images per forward pass

# LPIPS backbone → (torchvision model function, torchvision weights enum)
_BACKBONES = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def hub_checkpoints() -> Path:
    """The torch hub checkpoint folder (honours ``TORCH_HOME`` / ``XDG_CACHE_HOME`` now)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_weights_file(net: str = "alex") -> str:
    """torchvision's file name of the ImageNet weights of the LPIPS backbone ``net``."""
    import torchvision.models

    if net not in _BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {net!r} (expected one of {sorted(_BACKBONES)})")
    enum = getattr(torchvision.models, _BACKBONES[net][1])
    return enum.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


HUB_WORDS = "torch's hub checkpoints ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/" \
    "checkpoints)"
"""Where the hub cache is, in words: a record's or a report's note names no machine's home
folder, so the committed outputs regenerate byte for byte on any machine."""


def _locate(explicit: str | None, env: str, filename: str) -> tuple[Path | None, str]:
    """(path or None, where it was looked for): argument, environment variable, hub cache."""
    if explicit:
        path = expanded(explicit)
        return (path if path.is_file() else None), f"{path} (the weights argument)"
    if os.environ.get(env, "").strip():
        path = expanded(os.environ[env].strip())
        return (path if path.is_file() else None), f"{path} (${env})"
    path = hub_checkpoints() / filename
    return (path if path.is_file() else None), str(path.parent)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


# --- LPIPS ----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _lpips_model(net: str, file_key: tuple[str, int, int]) -> nn.Module:
    """torchmetrics' LPIPS with the package's linear layers and the local backbone weights."""
    from torchmetrics.functional.image.lpips import _LPIPS

    # pnet_rand: build the backbone without weights (no download); pretrained: the calibrated
    # linear layers that ship inside torchmetrics.
    model = _LPIPS(pretrained=True, net=net, pnet_rand=True)
    state = torch.load(file_key[0], map_location="cpu", weights_only=True)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    own = model.net.state_dict()
    mapped = {}
    for key in own:
        # torchmetrics slices torchvision's `features` keeping each layer's index:
        # slice1.0.weight / slices.0.0.weight ↔ features.0.weight
        source = "features." + re.sub(r"^(slice\d+|slices\.\d+)\.", "", key)
        if source not in state:
            raise KeyError(f"{source} missing: not a torchvision {_BACKBONES[net][0]} state dict")
        mapped[key] = state[source]
        if torch.is_floating_point(mapped[key]) and not torch.isfinite(mapped[key]).all():
            # every distance would be NaN, and every cell's record refused (exit 0)
            raise ValueError(f"{source} holds NaN or infinite values")
    model.net.load_state_dict(mapped, strict=True)
    model.eval().requires_grad_(False)
    return model


def _lpips_load(net: str, weights: str | None) -> tuple[nn.Module | None, str]:
    if net not in _BACKBONES:
        return None, f"LPIPS n/a: unknown backbone {net!r} (expected one of {sorted(_BACKBONES)})"
    filename = lpips_weights_file(net)
    path, where = _locate(weights, LPIPS_ENV, filename)
    if path is None:  # the hub cache in words: a record names no machine's home folder
        where = where if weights or os.environ.get(LPIPS_ENV, "").strip() else HUB_WORDS
        return None, (f"LPIPS n/a: put {filename} in {where}, or set {LPIPS_ENV} to the "
                      f"file's path")
    try:
        model = _lpips_model(net, _file_key(path))
    except Exception as err:  # a corrupt or foreign file: say so in one line
        return None, f"LPIPS n/a: {path} could not be loaded ({_first_line(err)})"
    return model, f"LPIPS ({net}) with backbone weights {path}"


def lpips_check(net: str, weights: str) -> str | None:
    """Why LPIPS with backbone ``net`` cannot load ``weights``, or None; the model built to
    find out is not kept (a run's parent process scores nothing)."""
    model, message = _lpips_load(net, weights)
    _lpips_model.cache_clear()
    return None if model is not None else message.removeprefix("LPIPS n/a: ")


def lpips_status(net: str = "alex", weights: str | None = None) -> tuple[bool, str]:
    """(available?, one-line message) for LPIPS with backbone ``net``; never downloads."""
    model, message = _lpips_load(net, weights)
    return model is not None, message


def _prepare(x: torch.Tensor, min_side: int | None) -> torch.Tensor:
    """[0,1] images → float32, 3 channels, shorter side ≥ ``min_side`` (bilinear)."""
    x = x.detach().float().clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    side = min(x.shape[-2:])
    if min_side is not None and side < min_side:
        scale = min_side / side
        size = tuple(max(min_side, round(d * scale)) for d in x.shape[-2:])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return x


def lpips_per_image(originals01: torch.Tensor, recon01: torch.Tensor, net: str = "alex",
                    weights: str | None = None) -> list[float] | None:
    """LPIPS distance of each reconstruction to its original (lower is closer); None if n/a.

    Inputs are N×C×H×W in [0,1] (already matched one-to-one); the reason for None is
    :func:`lpips_status`'s message.
    """
    if originals01.shape != recon01.shape:
        raise ValueError(f"shapes differ: {tuple(originals01.shape)} vs {tuple(recon01.shape)}")
    model, _ = _lpips_load(net, weights)
    if model is None:
        return None
    device = originals01.device
    model = model.to(device)
    a = _prepare(originals01, LPIPS_MIN_SIDE)
    b = _prepare(recon01, LPIPS_MIN_SIDE)
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(a), LPIPS_CHUNK):
            d = model(a[i:i + LPIPS_CHUNK], b[i:i + LPIPS_CHUNK], normalize=True)
            out.extend(float(v) for v in d.flatten().cpu())
    return out


# --- FID / KID ------------------------------------------------------------------------------------


class _Uint8Images(TorchDataset):
    """The input torch-fidelity takes: a Dataset of 3×H×W uint8 tensors."""

    def __init__(self, images01: torch.Tensor) -> None:
        x = _prepare(images01, None)
        self.images = (x * 255).round().to(torch.uint8).cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _fid_weights(weights: str | None) -> tuple[Path | None, str]:
    path, where = _locate(weights, FID_ENV, FID_WEIGHTS_FILE)
    if path is None:
        where = where if weights or os.environ.get(FID_ENV, "").strip() else HUB_WORDS
        return None, (f"FID/KID n/a: put {FID_WEIGHTS_FILE} in {where}, or set {FID_ENV} to "
                      f"the file's path")
    return path, f"FID/KID with Inception weights {path.name}"  # the file, not where it lies


def given_fid_weights_problem(explicit: str | None, flag: str) -> str | None:
    """:func:`fid_weights_problem` of the weights the user named, ``flag``'s value or else
    ``$LEAKBENCH_FID_WEIGHTS``, with what named them; None when neither is set. A broken
    file the variable named had made every group n/a, exit 0."""
    if explicit:
        problem = fid_weights_problem(explicit)
        return f"{flag}: {problem}" if problem else None
    named = os.environ.get(FID_ENV, "").strip()
    problem = fid_weights_problem(named) if named else None
    return f"${FID_ENV}: {problem}" if problem else None


def fid_weights_problem(path: str) -> str | None:
    """Why ``path`` is not an Inception weights file torch-fidelity could use (missing, not a
    state dict torch loads), or None: checked before a report's groups are scored, where a
    bad file made every group n/a."""
    file = expanded(path)
    if not file.is_file():
        return f"no weights file at {path}"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file, in one line
        return f"{path} is not a weights file torch can load ({type(err).__name__})"
    if not isinstance(state, dict) or not state:
        return f"{path} holds no state dict (a mapping of weight tensors)"
    for key, shape in INCEPTION_ANCHORS.items():  # another network's state dict had made
        tensor = state.get(key)  # every group n/a, exit 0
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            return (f"{path} is not torch-fidelity's Inception-v3 (FID) state dict: no "
                    f"{key} of shape {'×'.join(map(str, shape))}")
    return None


INCEPTION_ANCHORS = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}
"""Two weights of torch-fidelity's Inception-v3 (the FID network, a port of TensorFlow's:
1 008 logits, where torchvision's Inception-v3 has 1 000) that another file lacks."""


def kid_subsets(n: int) -> dict[str, int]:
    """torch-fidelity's KID settings for sets of at least ``n`` images: 100 random subsets of
    min(n // 2, 1000) images a side, drawn without replacement. The KID is their mean (each
    subset's estimate is unbiased, so the mean is too) and ``kid_std`` their spread, which
    for half-subsets is the delete-half jackknife's estimate of a KID's sampling error
    (Shao & Wu 1989). Subsets of all n images, torch-fidelity's choice for n ≤ 1000, are the
    same set in 100 orders: their spread was rounding (some 1e-16) for a group against its
    originals, and for 1 000 samples against a larger reference only the reference's part."""
    return {"kid_subsets": 100, "kid_subset_size": max(2, min(n // 2, 1000))}


MIN_GROUP = 10  # images a side below which FID/KID are n/a: too biased or noisy to show


def fid_status(weights: str | None = None) -> tuple[bool, str]:
    """(weights file found?, one-line message) for FID/KID; never downloads."""
    path, message = _fid_weights(weights)
    return path is not None, message


def fid_kid(originals01: torch.Tensor, recon01: torch.Tensor, weights: str | None = None,
            min_group: int = MIN_GROUP, feature_layer: str = FID_LAYER) -> dict[str, Any]:
    """FID and KID between a pooled group of reconstructions and their originals.

    Returns ``{"fid", "kid", "kid_std", "n", "reason", "feature_layer"}``: the metrics are None,
    with a one-line ``reason``, when the group has fewer than ``min_group`` images (at least 4)
    or the Inception weights are not found locally. KID is over ``kid_subsets(n)`` and
    torch-fidelity's fixed seed, so it is deterministic. ``feature_layer`` is
    the standard "2048" (pool3); "64", "192" and "768" are the earlier pooled layers, cheap
    enough for smoke checks on a CPU but not comparable with published FID/KID.
    """
    if feature_layer not in FID_LAYERS:
        raise ValueError(f"unknown feature layer {feature_layer!r} (expected one of {FID_LAYERS})")
    n = int(min(len(originals01), len(recon01)))
    result: dict[str, Any] = {"fid": None, "kid": None, "kid_std": None, "n": n, "reason": None,
                              "feature_layer": feature_layer}
    need = max(4, int(min_group))
    if len(originals01) < need or len(recon01) < need:
        result["reason"] = (f"FID/KID n/a: {n} images in the group, fewer than the "
                            f"{need} required")
        return result
    path, message = _fid_weights(weights)
    if path is None:
        result["reason"] = message
        return result
    import torch_fidelity

    try:
        metrics = torch_fidelity.calculate_metrics(
            input1=_Uint8Images(recon01), input2=_Uint8Images(originals01),
            fid=True, kid=True, feature_extractor="inception-v3-compat",
            feature_layer_fid=feature_layer, feature_layer_kid=feature_layer,
            feature_extractor_weights_path=str(path), cache=False,
            cuda=originals01.device.type == "cuda", batch_size=64, save_cpu_ram=True,
            verbose=False, **kid_subsets(n))
    except Exception as err:  # a corrupt or foreign weights file: n/a, in one line
        result["reason"] = f"FID/KID n/a: torch-fidelity failed with {path} ({_first_line(err)})"
        return result
    result["fid"] = float(metrics["frechet_inception_distance"])
    result["kid"] = float(metrics["kernel_inception_distance_mean"])
    result["kid_std"] = float(metrics["kernel_inception_distance_std"])
    return result


LPIPS_OFF = "LPIPS off in the suite"
LPIPS_SCORING = "lpips_scoring"
"""The metrics' entry naming LPIPS's backbone, ``{"net": "alex"}``: a mapping, which records'
readers take as a structure beside the metrics (an earlier leakbench too, where a text
value had made the record damaged)."""


def perceptual_metrics(x01: torch.Tensor, recon01: torch.Tensor, matching: list[int],
                       settings: dict[str, Any]) -> dict[str, Any]:
    """LPIPS of the matched pairs, or n/a with the one line that says how to supply weights."""
    if not settings.get("lpips", True):
        return {"lpips": None, "lpips_worst": None, "lpips_note": LPIPS_OFF}
    net, weights = settings.get("lpips_net", "alex"), settings.get("lpips_weights")
    available, message = lpips_status(net, weights)
    if not available or len(matching) != len(x01):
        return {"lpips": None, "lpips_worst": None, "lpips_note": message}
    values = lpips_per_image(x01, recon01[torch.as_tensor(matching)], net, weights)
    if values is None:
        return {"lpips": None, "lpips_worst": None, "lpips_note": message}
    if not all(math.isfinite(v) for v in values):  # the record, and the attack's result in
        # it, had been refused as a whole
        return {"lpips": None, "lpips_worst": None, "lpips_note": (
            f"LPIPS n/a: the network gave a distance that is not a finite number ({message})")}
    return {"lpips": sum(values) / len(values), "lpips_worst": max(values),
            "lpips_note": None, "per_image_lpips": values, LPIPS_SCORING: {"net": net}}


def lpips_setting(metrics: dict[str, Any] | None) -> str | None:
    """How a record's LPIPS was scored: "off", its backbone ("alex", "vgg", "squeeze"), or
    None where that is unknown (n/a for want of weights; a record from before the backbone
    was recorded)."""
    metrics = metrics or {}
    if metrics.get("lpips_note") == LPIPS_OFF:
        return "off"
    net = (metrics.get(LPIPS_SCORING) or {}).get("net")
    return net if isinstance(net, str) and metrics.get("lpips") is not None else None


def suite_lpips_setting(settings: dict[str, Any]) -> str:
    """The LPIPS a suite's ``perceptual`` settings ask for: "off" or the backbone."""
    return "off" if not settings.get("lpips", True) else str(settings.get("lpips_net", "alex"))
