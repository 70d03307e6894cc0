"""A plug-in dataset or architecture that disagrees with its own declarations (session 50's
plug-in hunt): its metadata, items, labels or logits. Each had ended in torch's errors naming
no component (``mat1 and mat2 shapes cannot be multiplied``, ``'tuple' object has no
attribute 'dim'``), in a NaN cell blamed on the attack, or in ok cells scored on truncated
labels or the wrong number of classes. Now a declaration that cannot hold refuses the suite in
one line naming the component; data that breaks it at run time is an error record saying
what."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bench.cells import cell_from_json
from bench.contracts import Arch, Dataset, DatasetMeta
from bench.data import stack_items
from bench.registry import ARCHS, DATASETS, Param, register_arch, register_dataset
from bench.returns import meta_problem
from bench.suite import iter_cells
from helpers import TINY_SUITE, make_suite, one_line, run_record, write_suite


class OddData(Dataset):
    """Grey 16×16 noise in four classes, spoilt as ``mode`` says."""

    params = (Param("mode", str, "ok"),)

    def meta(self) -> DatasetMeta:
        if self.mode == "none_meta":
            return None  # type: ignore[return-value]
        mean, std, classes = (0.0,), (1.0,), 4
        if self.mode == "numpy_meta":  # numpy's integers, statistics as 0-dim tensors
            x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(5))
            return DatasetMeta(tuple(np.array([1, 16, 16])), np.int64(4),
                               tuple(x.mean((0, 2, 3))), tuple(x.std((0, 2, 3))))
        if self.mode == "mean_len":
            mean = (0.0, 0.0, 0.0)
        elif self.mode == "std_zero":
            std = (0.0,)
        elif self.mode == "no_classes":
            classes = 0
        return DatasetMeta((1, 16, 16), classes, mean, std)

    def load(self, split: str) -> list:
        if self.mode == "load_none":
            return None  # type: ignore[return-value]
        if self.mode == "load_raises":
            raise KeyError(split)
        x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(len(split)))
        labels: list = [i % 4 for i in range(16)]
        if self.mode == "hw_only":
            x = x[:, 0]
        elif self.mode == "f64":
            x = x.double()
        elif self.mode == "u8":
            x = (x * 255).to(torch.uint8)
        elif self.mode == "half_labels":
            labels = [y + 0.5 for y in labels]
        elif self.mode == "one_hot":
            labels = [nn.functional.one_hot(torch.tensor(y), 4) for y in labels]
        elif self.mode == "six_labels":
            labels = [i % 6 for i in range(16)]
        return list(zip(x, labels))


class OddArch(Arch):
    """A linear model, spoilt as ``mode`` says."""

    params = (Param("mode", str, "ok"),)

    def build(self, input_shape, num_classes):
        if self.mode == "type_error":
            raise TypeError("a bug in build")
        mode, features = self.mode, input_shape[0] * input_shape[1] * input_shape[2]
        outputs = num_classes + 3 if mode == "classes" else num_classes

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(features, outputs)

            def forward(self, x):
                out = self.fc(x.flatten(1))
                return {"tuple": (out, out), "detach": out.detach()}.get(mode, out)

        return Net().double() if mode == "f64" else Net()


@pytest.fixture(autouse=True)
def _registered():
    register_dataset("odddata")(OddData)
    register_arch("oddarch")(OddArch)
    yield
    DATASETS.unregister("odddata")
    ARCHS.unregister("oddarch")


def _records(tmp_path, data: str = "ok", arch: str = "ok", **overrides) -> list[dict]:
    from bench.runner import run_suite
    from bench.store import load_records

    suite = make_suite(**{"seeds": 1, "datasets": [{"odddata": {"mode": data}}],
                          "archs": [{"oddarch": {"mode": arch}}], **overrides})
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    return load_records(tmp_path)


@pytest.mark.parametrize("mode,problem", [
    ("mean_len", "its DatasetMeta's mean has 3 value(s) for 1 channel(s), expected one per "
                 "channel"),
    ("std_zero", "its DatasetMeta has mean (0.0,) and std (0.0,), expected finite values and a "
                 "std above 0"),
    ("no_classes", "its DatasetMeta has num_classes 0, expected a whole number ≥ 1"),
    ("none_meta", "meta() returned None, expected a DatasetMeta"),
])
def test_a_dataset_whose_metadata_cannot_describe_its_data_is_one_line(mode, problem, tmp_path,
                                                                        capsys):
    """Three mean values for a grey dataset had been broadcast into a 3-channel batch (``mat1
    and mat2 shapes cannot be multiplied``), a std of 0 made a NaN cell blamed on the attack,
    0 classes built a model of no outputs."""
    suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "archs": ["mlp"],
                                               "datasets": [{"odddata": {"mode": mode}}]})
    line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--dry-run")
    assert line == f"leakbench: error: {suite}: dataset odddata(mode={mode}): {problem}", line


@pytest.mark.parametrize("mode,needle", [
    ("hw_only", "setup: ValueError: the dataset's items have shape (16, 16), its DatasetMeta "
                "says (1, 16, 16)"),
    ("half_labels", "setup: ValueError: the dataset's labels are class indices (whole numbers): "
                    "its load() gave 0.5"),
    ("one_hot", "setup: ValueError: the dataset's labels are tensors of shape (4,): a "
                "dataset's load() gives one class index per item"),
])
def test_items_that_disagree_with_their_metadata_are_an_error_record_saying_so(mode, needle,
                                                                               tmp_path):
    """Grey items without a channel axis had ended ``metric ssim: compute raised`` (blaming
    a metric) or in LeNet's channel error; labels 0.5, 1.5 were truncated and scored ok; one-hot
    rows read as a language model's per-position labels."""
    (record,) = _records(tmp_path, data=mode)
    assert record["status"] == "error" and record["error"].startswith(needle), record["error"]


def test_float64_images_run_in_float32(tmp_path):
    """They had ended ``mat1 and mat2 must have the same dtype``."""
    (record,) = _records(tmp_path, data="f64")
    assert record["status"] == "ok", record["error"]


@pytest.mark.parametrize("mode,needle", [
    ("u8", "the dataset's images are uint8 (0–255?)"),
    ("six_labels", "the dataset's labels lie outside 0…3"),
])
def test_the_utility_track_checks_its_batches_as_the_attack_does(mode, needle, tmp_path):
    """uint8 images had made a utility cell ``diverged`` ("non-finite weights"), labels past
    the metadata's classes ``IndexError: Target 5 is out of bounds``: no dataset named."""
    records = _records(tmp_path, data=mode, attacks=[{"idlg": {"steps": 1}}],
                       utility={"steps": 2, "batch_size": 4, "lr": 0.1, "eval_size": 8})
    (record,) = [r for r in records if r.get("kind") == "utility"]
    assert record["status"] == "error" and needle in record["error"], record


@pytest.mark.parametrize("mode,problem", [
    ("tuple", "its model returned tuple, expected a tensor of logits"),
    ("classes", "its model returned logits of shape (2, 7) for 2 items, expected (2, 4) or "
                "(2, 1) (the dataset has 4 classes)"),
    ("detach", "its model's output does not depend on its parameters (detached)"),
])
def test_an_arch_whose_logits_cannot_be_trained_on_is_one_line(mode, problem, tmp_path, capsys):
    """A tuple had ended ``'tuple' object has no attribute 'dim'``, a detached output
    ``element 0 of tensors does not require grad``, seven logits for four classes ran ok
    (``ig``, ``idlg``, the utility track at a wrong chance)."""
    suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "datasets": [{"odddata": {}}],
                                               "archs": [{"oddarch": {"mode": mode}}]})
    line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--dry-run")
    assert line.startswith(f"leakbench: error: {suite}: arch oddarch(mode={mode}): {problem}"), \
        line


@pytest.mark.parametrize("mode,needle", [
    ("f64", "setup: TypeError: arch oddarch: build returned a model with float64 parameters, "
            "expected float32"),
    ("type_error", "setup: RuntimeError: arch oddarch: build raised TypeError: a bug in build"),
])
def test_an_arch_that_fails_at_its_real_build_is_an_error_record_naming_it(mode, needle,
                                                                           tmp_path):
    """``mat1 and mat2 must have the same dtype``, ``setup: TypeError: a bug in build``."""
    (record,) = _records(tmp_path, arch=mode)
    assert record["status"] == "error" and record["error"].startswith(needle), record["error"]


def test_every_built_in_dataset_and_arch_passes_the_checks():
    """The checks refuse none of the shipped components: each bundled dataset's metadata,
    and each arch's logits on the meta device for the modalities it takes."""
    from bench.returns import meta_problem
    from bench.suite.match import _build_problem

    metas = {}
    for name in ("photos", "digits", "pydoc"):
        metas[name] = DATASETS.get(name).cls().meta()
        assert meta_problem(metas[name]) is None, name
    for name in ARCHS.names():
        if name == "oddarch":
            continue
        arch = ARCHS.get(name).cls()
        for meta in metas.values():
            if meta.modality in arch.modalities:
                assert _build_problem(arch, meta, name) is None, (name, meta.shape)


def test_numpy_integers_and_tensor_statistics_in_the_metadata_are_accepted(tmp_path):
    """``np.int64`` classes and shape, and a mean taken as ``tuple(images.mean((0, 2, 3)))``
    ran before the metadata was checked: they still do."""
    (record,) = _records(tmp_path, data="numpy_meta")
    assert record["status"] == "ok", record["error"]


def test_an_arch_error_is_named_on_a_torch_without_torch_out_of_memory_error(tmp_path,
                                                                              monkeypatch):
    """``torch.OutOfMemoryError`` came with torch 2.5 (leakbench admits 2.2): the handler
    naming the arch had itself raised AttributeError there."""
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    (record,) = _records(tmp_path, arch="type_error")
    assert record["error"].startswith("setup: RuntimeError: arch oddarch: build raised "
                                      "TypeError: a bug in build"), record["error"]


@pytest.mark.parametrize("axis,mode,needle", [
    ("dataset", "std_zero", "dataset odddata(mode=std_zero): its DatasetMeta has mean (0.0,) "
                            "and std (0.0,)"),
    ("arch", "classes", "arch oddarch: its model returned logits of shape (2, 7) for 2 items"),
])
def test_a_cell_run_without_its_suite_expansion_checks_as_the_expansion_does(axis, mode, needle):
    """``leakbench rerun`` rebuilds a cell from its record's JSON and skips the expansion: a
    std of 0 was a diverged cell blamed on the attack there, seven logits for four classes
    an ok cell."""
    (cell,) = iter_cells(make_suite(seeds=1, datasets=[{"odddata": {}}],
                                    archs=[{"oddarch": {}}]))
    data = cell.to_json()
    data[axis]["params"] = {"mode": mode}
    record = run_record(cell_from_json(data))
    assert record["status"] == "error" and needle in record["error"], record["error"]


TEXT_LM = DatasetMeta((12,), 50, (), (), modality="text", task="lm")


@pytest.mark.parametrize("items,needle", [
    ([(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long))],
     "the dataset's items have shape (10,), its DatasetMeta says (12,)"),
    ([(torch.zeros(12), torch.zeros(12, dtype=torch.long))],
     "the dataset's token ids are float32, expected integers"),
    ([(torch.zeros(12, dtype=torch.long), 3)],
     "the dataset's labels are one number per item: a language model's labels are the next "
     "token at every position"),
    ([(torch.zeros(12, dtype=torch.long), torch.zeros(11, dtype=torch.long))],
     "the dataset's labels have shape (11,) per item, its items (12,)"),
])
def test_text_items_are_checked_against_their_metadata(items, needle):
    """Sequences of 10 tokens where the metadata says 12 ran ok (the transformer slices its
    position table), float token ids and one label per sequence failed later, in torch."""
    with pytest.raises(ValueError) as caught:
        stack_items(items, [0], TEXT_LM)
    assert str(caught.value).startswith(needle), caught.value


def test_the_public_split_is_checked_and_float32_as_the_private_batch_is():
    from bench.public import public_data

    public = public_data(OddData(mode="f64"))
    assert public.images.dtype == torch.float32 and public.labels.dtype == torch.int64


@pytest.mark.parametrize("label,index", [(np.True_, 1), (np.array(3), 3), (np.float32(2.0), 2),
                                         (torch.tensor(1), 1)])
def test_numpy_and_tensor_labels_read_as_class_indices(label, index):
    _, y = stack_items([(torch.zeros(1, 16, 16), label)], [0], OddData().meta())
    assert y.tolist() == [index]


@pytest.mark.parametrize("change,problem", [
    ({"mean": None}, "its DatasetMeta's mean is None, expected a tuple of one value per "
                     "channel"),
    ({"modality": "text", "shape": 12}, "its DatasetMeta has shape 12, expected (sequence "
                                        "length,)"),
])
def test_metadata_of_the_wrong_kind_is_a_problem_not_a_crash(change, problem):
    assert meta_problem(dataclasses.replace(OddData().meta(), **change)) == problem


def test_a_run_prepares_each_attack_once_per_dataset_before_any_cell(tmp_path):
    """An attack's shared, cached work (dmcmc's score model) ran inside its first cell:
    timed as that cell's attack and, past the cell timeout, killed in every cell."""
    from bench.contracts import Attack, Reconstruction
    from bench.registry import ATTACKS, register_attack

    calls: list[tuple[str, int]] = []

    class Prepared(Attack):
        """Guesses zeros; prepares first."""

        params = (Param("tag", int, 0),)

        def prepare(self, dataset, progress=False):
            calls.append(("prepare", self.tag))

        def reconstruct(self, obs):
            calls.append(("cell", self.tag))
            return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))

    register_attack("prepared")(Prepared)
    try:
        _records(tmp_path, seeds=2, attacks=[{"prepared": {"tag": [1, 2]}}])
    finally:
        ATTACKS.unregister("prepared")
    assert calls[:2] == [("prepare", 1), ("prepare", 2)] and len(calls) == 6, calls
    assert sorted(calls[2:]) == [("cell", 1), ("cell", 1), ("cell", 2), ("cell", 2)]


def test_dmcmc_cells_load_the_score_model_the_run_prepared(tmp_path, monkeypatch):
    from bench import scoremodel
    from bench.grants import PUBLIC_DATA
    from bench.runner import run_suite
    from bench.store import load_records

    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cache"))
    where: list[str] = []
    train = scoremodel.train_score

    def tracked(*args, **kwargs):
        import traceback

        inside = {frame.name for frame in traceback.extract_stack()}
        where.append("prepare" if "prepare_attacks" in inside else "cell")
        return train(*args, **kwargs)

    monkeypatch.setattr(scoremodel, "train_score", tracked)
    dmcmc = {"sweeps": 2, "denoise_steps": 1, "score_steps": 3, "score_width": 8}
    suite = make_suite(seeds=2, datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA],
                       attacks=[{"dmcmc": dmcmc}])
    run_suite(suite, tmp_path / "o", jobs=0, device="cpu", progress=False)
    assert where == ["prepare"]  # trained once, before the cells, which loaded it
    assert {r["status"] for r in load_records(tmp_path / "o")} == {"ok"}


@pytest.mark.parametrize("name,config,message", [
    ("heun", {"rho": 1e10}, "heun.rho: 10000000000.0 is above the maximum 100"),
    ("heun", {"sigma_min": 100.0}, "heun: sigma_min (100) must be below sigma_max (20)"),
    ("dmcmc", {"sigma_min": 0.1}, "dmcmc: sigma_min (0.1) must be below sigma_lo (0.05)"),
])
def test_a_sampler_schedule_that_collapses_is_refused(name, config, message):
    """ρ = 1e10 made every float32 level 1.0, σ_min above σ_max a constant schedule: both
    spent their evaluations and ran "ok"."""
    from bench.registry import SAMPLERS, ParamError

    SAMPLERS.load()
    with pytest.raises(ParamError) as caught:
        SAMPLERS.get(name).cls(**config)
    assert str(caught.value) == message


@pytest.mark.parametrize("flags,named", [(["--out", "X"], "--out"),
                                         (["--samples", "1", "--seed", "-5"], "--samples, --seed")])
def test_prior_curve_attacks_refuses_the_curves_flags(flags, named, capsys, tmp_path):
    """``--attacks DIR --out X --samples 1 --seed -5`` wrote DIR/attack_quality.md, every
    other flag ignored in silence."""
    line = one_line(capsys, "prior-curve", "--attacks", str(tmp_path), *flags)
    assert line.startswith(f"leakbench: error: prior-curve --attacks: {named} set(s) the "
                           "sampler curve, not --attacks"), line


@pytest.mark.parametrize("mode,problem", [
    ("load_none", "load('train') returned None, expected a sequence of (item, label) pairs"),
    ("load_raises", "its files could not be read (KeyError: 'train'): check its load()"),
])
def test_a_dataset_whose_load_fails_is_one_line_that_fits_it(mode, problem, tmp_path, capsys):
    """``load()`` returning None read "its files could not be read (TypeError: object of type
    'NoneType' has no len()): replace the damaged files or fix `root:`", for a dataset with
    neither files nor ``root``."""
    suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "archs": ["mlp"],
                                               "datasets": [{"odddata": {"mode": mode}}]})
    line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--jobs", "0")
    assert line.endswith(f"odddata(mode={mode}): {problem}"), line
