"""R-GAP's rank analysis (attacks/rgap_rank.py): counts, structural ranks, risk index, table."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import rgap_gram as rg
from attacks.rgap_chain import parse_chain
from attacks.rgap_rank import analyse_chain, rank_layers, rank_report, risk_index
from bench.registry import ARCHS


def _model(arch, shape, **params):
    return ARCHS.get(arch).cls(**params).build(shape, 10)


def test_risk_index_orders_the_papers_networks():
    """FCN3 and CNN6 are fully determined by their gradients; CNN6-d, the paper's
    rank-deficient variant, is not, so it carries the lower risk."""
    r_cnn6 = risk_index(_model("cnn6", (3, 32, 32)), (3, 32, 32))
    r_cnn6d = risk_index(_model("cnn6d", (3, 32, 32)), (3, 32, 32))
    r_fcn3 = risk_index(_model("fcn3", (1, 28, 28)), (1, 28, 28))
    assert r_cnn6 == 1.0 and r_fcn3 == 1.0
    assert r_cnn6d < r_cnn6 and r_cnn6d < r_fcn3
    assert r_cnn6d == pytest.approx(1 - 280 / 3468)


def test_cnn6d_counts_at_32px():
    layers = rank_layers(_model("cnn6d", (3, 32, 32)), (3, 32, 32))
    assert [lr.unknowns for lr in layers] == [3072, 3468, 1620, 2916, 2916, 1600, 3200]
    second = layers[1]  # conv 12→20, k3, s2: 2160 weights, 1968 independent equations
    assert (second.gradient_constraints, second.gradient_rank) == (2160, 1968)
    assert (second.forward_constraints, second.virtual_constraints) == (1620, 1620)
    assert second.dependencies == 400 and second.rank == 3188 and second.deficit == 280
    # the deficit travels down: the first layer gets fewer virtual than forward constraints
    assert layers[0].forward_constraints == 3468 and layers[0].virtual_constraints == 3188
    assert all(lr.deficit == 0 for lr in rank_layers(_model("cnn6", (3, 32, 32)), (3, 32, 32)))


def _numeric_ranks(model, shape):
    """Numerical ranks of each conv layer's gradient block and of both blocks stacked."""
    chain, reason = parse_chain(model, shape)
    assert chain is not None, reason
    gen = torch.Generator().manual_seed(0)
    out = []
    for st in chain.stages[:-1]:
        w = st.module.weight.detach().double()
        k = torch.randn(st.out_shape, generator=gen, dtype=torch.float64)
        gg = rg.conv_gradient_gram(k, st.in_shape, st.module.kernel_size, st.stride, st.padding)
        gf = rg.conv_forward_gram(w, st.in_shape, st.stride, st.padding)

        def rank(g):
            ev = torch.linalg.eigvalsh(g)
            return int((ev > 1e-9 * ev.max()).sum())

        out.append((rank(gg), rank(gg / gg.diagonal().mean() + gf / gf.diagonal().mean())))
    return chain, out


COUNTED_RIGHT = [  # configurations the structural counts get right
    (((12, 4, 2, 2), (20, 3, 2, 1), (36, 3, 1, 1)), (3, 16, 16)),
    (((4, 2, 2, 0), (6, 3, 3, 1), (5, 3, 1, 2)), (2, 11, 13)),
    (((3, 5, 1, 2), (8, 3, 2, 0)), (3, 9, 9)),
    (((2, 3, 1, 1), (3, 3, 1, 1)), (4, 6, 6)),
    # stride 2 without padding never reads the last row and column: 30 pixels no equation
    # holds, which the analysis counted as determined (risk index 1.0)
    (((40, 3, 2, 0),), (2, 8, 8)),
    (((12, 3, 2, 1),), (3, 8, 8)),
    (((4, 2, 2, 0), (9, 3, 2, 0)), (2, 9, 11)),
]


def _conv_chain(convs, shape):
    torch.manual_seed(0)
    layers, c = [], shape[0]
    for out, k, s, p in convs:
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p, bias=False), nn.LeakyReLU(0.2)]
        c = out
    body = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(1, *shape)).shape[1]
    return nn.Sequential(*body, nn.Linear(features, 1, bias=False))


@pytest.mark.parametrize("convs,shape", COUNTED_RIGHT)
def test_counted_ranks_match_the_numerical_ranks(convs, shape, one_thread, monkeypatch):
    """The structural counts, which layers above ``NUMERICAL_UNKNOWNS`` get, checked where
    they hold (measuring every layer here would check the measurement against itself)."""
    monkeypatch.setattr("attacks.rgap_rank.NUMERICAL_UNKNOWNS", 0)
    chain, numeric = _numeric_ranks(_conv_chain(convs, shape), shape)
    layers = analyse_chain(chain)
    assert all(lr.method == "structural" for lr in layers)
    for lr, above, (grad_rank, both_rank) in zip(layers, layers[1:], numeric):
        assert lr.gradient_rank == grad_rank, lr
        if above.deficit == 0:
            assert lr.rank == both_rank, lr


COUNTED_WRONG = [  # identities between output channels within one stride phase, which the
    # counts miss (an R-GAP hunt): gradient rank 100 counted, 98 measured; 102 against 105;
    # deficit 0 counted (risk index 1.0) against 18 measured, where R-GAP in float64 reaches
    # 13 dB
    (((2, 5, 2, 0),), (2, 9, 10)),
    (((9, 2, 3, 1),), (3, 10, 7)),
    (((6, 4, 3, 3),), (3, 10, 9)),
]


@pytest.mark.parametrize("convs,shape", COUNTED_RIGHT + COUNTED_WRONG)
def test_small_layers_are_measured_and_match_the_numerical_ranks(convs, shape, one_thread):
    chain, numeric = _numeric_ranks(_conv_chain(convs, shape), shape)
    layers = analyse_chain(chain)
    assert all(lr.method == "numerical" for lr in layers[:-1])
    for lr, above, (grad_rank, both_rank) in zip(layers, layers[1:], numeric):
        assert lr.gradient_rank == grad_rank, lr
        if above.deficit == 0:  # every forward constraint is known: the stacked system's rank
            assert lr.rank == both_rank, lr


@pytest.mark.parametrize("convs,shape", COUNTED_WRONG)
def test_the_counts_miss_what_measuring_finds(convs, shape, one_thread, monkeypatch):
    """Why small layers are measured: counted, these layers' ranks are wrong."""
    measured = analyse_chain(parse_chain(_conv_chain(convs, shape), shape)[0])[0]
    monkeypatch.setattr("attacks.rgap_rank.NUMERICAL_UNKNOWNS", 0)
    counted = analyse_chain(parse_chain(_conv_chain(convs, shape), shape)[0])[0]
    assert (counted.gradient_rank, counted.rank) != (measured.gradient_rank, measured.rank)


def test_report_and_out_of_scope_architectures():
    text = rank_report("cnn6d", {}, (3, 32, 32), 10)
    lines = text.splitlines()
    assert "cnn6d" in lines[0] and "unknowns" in lines[1] and "virtual" in lines[1]
    assert lines[3].startswith("6: Linear(3200→1)")  # top layer first
    assert "risk index: 0.9193" in text and "280 free directions" in text
    assert "every layer is determined" in rank_report("fcn3", {"head": "linear"}, (1, 28, 28), 10)
    relu = rank_report("lenet", {"activation": "relu"}, (3, 32, 32), 10)
    assert "does not apply" in relu and "ReLU" in relu
    assert relu.endswith("risk index: n/a (outside R-GAP's scope)")
    assert math.isnan(risk_index(_model("mlp", (1, 16, 16)), (1, 16, 16)))


def test_the_architecture_table_reads_the_input_shape_from_the_records(tmp_path):
    """A leaderboard is a function of its records: the architecture table takes the input
    shape from the record (``input_meta``) instead of rebuilding a dataset whose files may
    be absent on this machine (it showed n/a and DatasetNotFoundError there)."""
    from bench.leaderboard.tables import architecture_table
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False)
    (record,) = load_records(tmp_path)
    assert record["input_meta"] == {"shape": [3, 16, 16], "num_classes": 8}
    elsewhere = {**record, "dataset": {"name": "imagefolder",
                                       "params": {"folder": str(tmp_path / "absent")}}}
    row = architecture_table([elsewhere]).frame.iloc[0]
    assert row["Input"].endswith("(3×16×16)") and row["Parameters"] != "n/a"
    old = {k: v for k, v in elsewhere.items() if k != "input_meta"}  # a record before it
    assert architecture_table([old]).frame.iloc[0]["Parameters"] == "n/a"


def test_a_linear_layer_on_an_unflattened_input_is_out_of_scope():
    """A Linear acting on a feature map's last dimension was accepted (a bogus rank table,
    risk index 1.0), then R-GAP crashed with a size mismatch."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.LeakyReLU(0.2),
                          nn.Linear(8, 5, bias=False), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Linear(160, 1, bias=False))
    chain, reason = parse_chain(model, (3, 8, 8))
    assert chain is None and "needs a Flatten before a Linear layer" in reason

