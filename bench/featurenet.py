"""FID/KID features without Inception weights: a small classifier trained on the public split.

FID and KID (bench.perceptual) need Inception-v3 weights, which leakbench never downloads.
Where the user has not supplied them, the ``prior`` experiment measures sample quality in
the feature space of a small convolutional classifier that leakbench trains on the public
split's labels (the penultimate layer, 64 features), registered with torch-fidelity as the
feature extractor ``leakbench-public`` so that torch-fidelity computes FID and KID exactly as
with Inception. Such numbers compare samplers with each other on one dataset; they are not
comparable with published Inception FIDs, and every table says which features it used.

The network is cached like trained victims (one file per key: the public split's key,
the settings, the seed; atomic write under a lock), under ``$LEAKBENCH_CACHE/features/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import cache_root, cached, settings_key, torch_bytes
from bench.perceptual import _Uint8Images, fid_kid, fid_status, kid_subsets
from bench.public import PublicData

EXTRACTOR = "leakbench-public"
FEATURES = "64"
TRAINING = {"width": 32, "steps": 400, "batch_size": 64, "lr": 2e-3, "dtype": "float64",
            "version": 2}


class FeatureNet(nn.Module):
    """Three conv–GroupNorm–ReLU stages, global average pooling → 64 features → classes."""

    def __init__(self, channels: int, classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for cout in (width, 2 * width, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(),
                       nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _key(public: PublicData, seed: int) -> str:
    ident = {"data": public.key, "shape": list(public.images.shape[1:]), "training": TRAINING,
             "classes": int(public.labels.max()) + 1, "seed": seed}
    return settings_key(ident)


def feature_net_file(public: PublicData, seed: int = 0, cache: Path | None = None) -> Path:
    """The cached feature network of ``public`` (trained now when absent): its file."""
    path = (cache or cache_root() / "features") / f"{_key(public, seed)}.pt"
    return cached(path, lambda: torch_bytes(_train(public, seed)), lambda p: p)


def _train(public: PublicData, seed: int) -> dict[str, Any]:
    """Trained in float64, kept in float32: in float32, 400 Adam steps grew the last-bit
    differences of CPU kernels (AVX2 or AVX-512, oneDNN or not, one thread or two) into
    FIDs 10% apart, so a committed ``attack_quality.md`` did not regenerate on another
    machine; float64 gives the same bytes across those."""
    torch.manual_seed(seed)
    x, y = public.images.to(torch.float64), public.labels
    classes = int(y.max()) + 1
    net = FeatureNet(x.shape[1], classes, TRAINING["width"]).to(torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=TRAINING["lr"])
    gen = torch.Generator().manual_seed(seed ^ 0xFEA7)
    for _ in range(TRAINING["steps"]):
        idx = torch.randint(len(x), (TRAINING["batch_size"],), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"state": {k: v.float() for k, v in net.state_dict().items()},
            "channels": x.shape[1], "size": x.shape[-1],
            "classes": classes, "width": TRAINING["width"]}


def _extractor_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class PublicFeatures(FeatureExtractorBase):
        """torch-fidelity's view of a :class:`FeatureNet`: uint8 RGB in, 64 features out."""

        def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
            super().__init__(name, features_list)
            saved = torch.load(kwargs["feature_extractor_weights_path"], map_location="cpu",
                               weights_only=True)
            self.channels, self.size = saved["channels"], saved["size"]
            self.net = FeatureNet(saved["channels"], saved["classes"], saved["width"])
            self.net.load_state_dict(saved["state"])

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return (FEATURES,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return FEATURES

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            x = x.float() / 255
            if self.channels == 1:
                x = x.mean(1, keepdim=True)
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  antialias=True, align_corners=False)
            return (self.net.body(x),)

    return PublicFeatures


def register() -> None:
    """Register the extractor with torch-fidelity (once per process)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR, _extractor_class())


def quality(reference01: torch.Tensor, samples01: torch.Tensor, public: PublicData,
            inception: str | None = None) -> dict[str, Any]:
    """FID and KID of ``samples01`` against ``reference01``: Inception features when weights
    are found (``inception`` or bench.perceptual's usual places), else the public feature
    network's; ``features`` in the result says which."""
    if fid_status(inception)[0]:
        out = fid_kid(reference01, samples01, inception)
        return {**out, "features": "inception-v3-compat pool3 (2048)"}
    import torch_fidelity

    register()
    path = feature_net_file(public)
    n = min(len(reference01), len(samples01))
    metrics = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(samples01), input2=_Uint8Images(reference01), fid=True, kid=True,
        feature_extractor=EXTRACTOR, feature_layer_fid=FEATURES, feature_layer_kid=FEATURES,
        feature_extractor_weights_path=str(path), cache=False, cuda=False, batch_size=64,
        verbose=False, save_cpu_ram=True, **kid_subsets(n))
    return {"fid": float(metrics["frechet_inception_distance"]),
            "kid": float(metrics["kernel_inception_distance_mean"]),
            "kid_std": float(metrics["kernel_inception_distance_std"]), "n": n,
            "features": f"{EXTRACTOR}: 64-d features of a classifier trained on the public split"}
