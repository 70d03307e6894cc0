"""Shared fixtures: one torch thread per test, a plugin package with entry points, and a
random Inception-v3 weights file for FID/KID."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from helpers import PLUGIN, write_plugin


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread in every test: measured cells then do not depend on the machine's
    core count (summation order changes optimisation trajectories), and tests do not
    oversubscribe a shared 2-core machine (dense eigen-decompositions with two OpenMP threads
    on a busy machine stalled for seconds). Worker processes set their own thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding a module and its dist-info with leakbench entry points."""
    return write_plugin(tmp_path_factory.mktemp("plugin"), "leakbench_testplugin", PLUGIN,
                        "[leakbench.attacks]\nboom = leakbench_testplugin\n\n"
                        "[leakbench.defenses]\nflip = leakbench_testplugin:Flip\n"
                        "stall = leakbench_testplugin:Stall\n")


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Inception-v3 state dict, made by torch-fidelity's own feature-extractor class,
    saved under the file name torch-fidelity loads.

    The class loads weights in its constructor, so construction skips that step once; the
    convolutions get He initialisation so activations neither vanish nor explode.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    from bench.perceptual import FID_WEIGHTS_FILE

    cls = inception.FeatureExtractorInceptionV3
    torch.manual_seed(0)
    with mock.patch.object(cls, "load_state_dict", lambda self, state, *a, **k: None), \
            mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: {}):
        model = cls("inception-v3-compat", ["2048"])
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / FID_WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return path
