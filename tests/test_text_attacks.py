"""DAGER's exactness (and its bound report), DLG on text and TAG, on the tiny transformer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from attacks.dager_certificate import CERTIFIED, certificate, unexplained_energy
from attacks.dager_spans import numerical_rank
from bench.cells import RunOptions
from bench.pipeline import attack, observe, score_attack
from bench.suite import attack_cells
from helpers import CPU, make_suite, run_record

PYDOC = {"pydoc": {"task": "lm", "seq_len": 12}}


def cells(attacks, batch_size, seeds=2, width=128, dataset=PYDOC, victim="init", layers=2):
    arch = {"transformer": {"width": width, "layers": layers}}
    return attack_cells(make_suite(datasets=[dataset], archs=[arch],
                                   batch_size=batch_size, attacks=attacks, seeds=seeds,
                                   victim=victim))


def scored(cell):
    observed = observe(cell, CPU)
    done = attack(cell, observed.obs)
    metrics, ids = score_attack(observed, done.recon, RunOptions())
    return observed, done.recon, metrics, ids


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_dager_recovers_every_sequence_exactly_below_the_bound(batch):
    for cell in cells(["dager"], batch):  # 12 · batch ≤ 96 < width 128
        observed, recon, metrics, ids = scored(cell)
        assert recon.info["bound_exceeded"] is False
        assert recon.info["certified"] is True and recon.info["unexplained"] <= CERTIFIED
        assert metrics["token_acc"] >= 0.99 and metrics["exact"] == 1.0
        assert sorted(map(tuple, ids.tolist())) == sorted(map(tuple, observed.x01.tolist()))


@pytest.mark.parametrize("batch", [2, 4])
def test_dager_is_exact_on_short_sequences_where_the_true_prefixes_are_no_minority(batch):
    """At length 2 the first position's candidates are the token set (about 2B tokens), half
    of them true: none was an outlier below the bulk, only the best survived, and DAGER
    returned one sentence repeated (exact 0.5 at batch 2) with ``bound_exceeded`` false. The
    span check alone decides there now (a review's finding).

    A batch may hold one sentence twice (seed 1 at batch 4: (2, 1) twice): the span shows
    each distinct sentence, not how often, so which one fills the fourth row is decided by
    rounding (it was (2, 1) with AVX-512 kernels, (23, 7) with AVX2 ones, at scores 3e-3
    apart): every distinct sentence is recovered exactly, and the batch exactly where its
    sentences are distinct."""
    short = {"pydoc": {"task": "lm", "seq_len": 2}}
    repeats = 0
    for cell in cells(["dager"], batch, seeds=4, dataset=short):
        observed, recon, metrics, ids = scored(cell)
        true = {tuple(r) for r in observed.x01.tolist()}
        assert recon.info["bound_exceeded"] is False
        assert recon.info["sequences_found"] == len(true)
        assert {tuple(r) for r in ids.tolist()} == true, cell.seed
        if len(true) == batch:
            assert metrics["exact"] == 1.0, cell.seed
        repeats += len(true) < batch
    assert repeats < 4  # the exact-batch assertion ran


CLASSIFY = {"pydoc": {"task": "classify", "seq_len": 12, "vocab_size": 1000, "classes": 4}}


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_dager_recovers_every_sequence_exactly_on_the_trained_victim(batch):
    # the text suite's victim after 50 SGD steps: its float32 gradients lose their small
    # singular directions, which one layer's span check alone does not survive
    for cell in cells(["dager"], batch, dataset=CLASSIFY, victim="trained:50"):
        observed, recon, metrics, ids = scored(cell)
        assert recon.info["bound_exceeded"] is False and recon.info["certified"] is True
        assert metrics["token_acc"] >= 0.99 and metrics["exact"] == 1.0
        assert sorted(map(tuple, ids.tolist())) == sorted(map(tuple, observed.x01.tolist()))


def test_dager_classifier_victim_and_its_bound_report_when_exceeded():
    (cell,) = cells(["dager"], 4, seeds=1, dataset={"pydoc": {"task": "classify"}})
    assert scored(cell)[2]["exact"] == 1.0
    (wide,) = cells(["dager"], 4, seeds=1, width=32)  # 4 · 12 = 48 ≥ 32
    _, recon, metrics, _ = scored(wide)
    assert recon.info["bound_exceeded"] is True and recon.info["rows"] == 48
    assert recon.info["certified"] is False  # rows spanning every direction explain anything
    assert metrics["exact"] < 1.0


@pytest.mark.parametrize("victim", ["init", "trained:50"])
def test_dager_certifies_only_a_batch_that_explains_the_whole_update(victim):
    """The true batch leaves its weight gradients unexplained only to float32 rounding; one
    token moved, or two sentences' endings swapped (true tokens at true positions, which the
    first layer's check cannot tell apart), leave far more; so does noise on the update."""
    (cell,) = cells(["dager"], 4, seeds=1, dataset=CLASSIFY, victim=victim)
    observed = observe(cell, CPU)
    obs = observed.obs
    model = obs.model.to(CPU).eval()
    grads = dict(zip([n for n, p in model.named_parameters() if p.requires_grad],
                     obs.update.tensors))
    true = observed.x01.long()
    assert unexplained_energy(model, grads, true) < CERTIFIED / 100  # (≤ 5e-14 seen)
    moved = true.clone()
    moved[0, 3] = true[0, 3] + 1 if int(true[0, 3]) < 999 else 2  # one token another
    crossed = true.clone()
    crossed[0, 6:], crossed[1, 6:] = true[1, 6:], true[0, 6:]  # the endings swapped
    assert not torch.equal(crossed, true)
    for wrong in (moved, crossed):  # (moved, trained: 8.5e-8 on an AMD EPYC AVX2)
        assert unexplained_energy(model, grads, wrong) > 10 * CERTIFIED
    noisy = {k: v + 1e-3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
             for k, v in grads.items()}
    assert unexplained_energy(model, noisy, true) > 10 * CERTIFIED


def test_dager_certifies_no_batch_from_an_empty_update_or_one_with_a_spare_sentence():
    """Two ways a review fooled the certificate: an all-zero update (pruned at ratio 1)
    certified any batch, and a batch holding one sentence twice has spare rows, so a false
    sentence returned beside the true ones explained the update too."""
    from bench.client import training_loss

    (cell,) = cells(["dager"], 4, seeds=1, dataset=CLASSIFY)
    observed = observe(cell, CPU)
    model = observed.obs.model.to(CPU).eval()
    true = observed.x01.long().tolist()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    zero = {n: torch.zeros_like(p) for n, p in zip(names, params)}
    assert unexplained_energy(model, zero, torch.tensor(true)) == 1.0
    assert certificate(model, zero, true, CPU) == (1.0, False)
    twice = [true[0], true[0], true[1], true[2]]  # the batch: one sentence twice
    loss = training_loss(model(torch.tensor(twice)), torch.tensor([0, 0, 1, 2]))
    grads = dict(zip(names, torch.autograd.grad(loss, params)))
    assert certificate(model, grads, twice, CPU)[1]
    # how often a sentence occurs the span cannot say: the right distinct ones certify
    assert certificate(model, grads, [true[0], true[1], true[2], true[2]], CPU)[1]
    unexplained, certified = certificate(model, grads, [true[0], true[1], true[2], true[3]],
                                         CPU)  # true[3] is no sentence of this batch
    assert unexplained <= CERTIFIED and not certified


@pytest.mark.slow
def test_dager_searches_the_beam_for_a_batch_that_explains_the_update():
    """At batch 8 on the text suite's trained victim the beam's ranking alone gets some cells
    wrong (false sentences crossing true ones) with the bound not exceeded. Which ones hangs
    on the rounding of the victim's training: cells 11 and 15 of the first 20 on an AMD EPYC
    AVX2, 15 alone on an AMD EPYC AVX-512, where 15, 20, 21, 23, 25 and 29 of 32 are. The
    certificate passes none of those rankings; the search swaps the beam's sentences in,
    widening the beam for some, until the update is explained, and a batch it certifies is
    the true one (four of the six there; 21 and 25 stay uncertified at exact 0.875 and 0.5,
    and their ranked batch stands)."""
    from attacks.dager import BEAM, Dager
    from attacks.dager_spans import row_basis

    hard = []
    for cell in cells(["dager"], 8, seeds=32, dataset=CLASSIFY, victim="trained:50"):
        observed = observe(cell, CPU)
        obs, true = observed.obs, sorted(map(tuple, observed.x01.tolist()))
        model = obs.model.to(CPU).eval()
        grads = dict(zip([n for n, p in model.named_parameters() if p.requires_grad],
                         obs.update.tensors))
        dager = Dager()
        basis = row_basis(grads["blocks.0.qkv.weight"], 96, 0.0)
        with torch.no_grad():
            residuals, _ = dager._residuals(model, basis, 12)
            found = dager._token_set(dager._tokens(residuals, 8, 12), 96)
            beam = dager._extend(model, grads, found, 12, 8, CPU, BEAM)
            ranked = dager._fill(dager._select(model, beam, 8, CPU), 8)
        if sorted(map(tuple, ranked)) != true:  # the ranking alone: wrong
            assert not certificate(model, grads, ranked, CPU)[1], cell.seed
            hard.append((cell, true))
    assert hard  # two in the first 20 seeds and six in 32 on the machines above
    fixed, widened = [], []
    for cell, true in hard:
        _, recon, metrics, ids = scored(cell)
        assert recon.info["bound_exceeded"] is False and recon.info["swaps"] >= 1, cell.seed
        widened.append(max(recon.info["searched_widths"]) > BEAM)
        if recon.info["certified"]:  # only a batch that explains the update replaces it
            assert sorted(map(tuple, ids.tolist())) == true and metrics["exact"] == 1.0
            fixed.append(cell.seed)
    assert fixed and any(widened), (fixed, widened)


def test_dager_judges_its_answer_once(monkeypatch):
    """The search's certificate of the batch it returns is the record's: it had been computed
    again in ``reconstruct`` (each is 1 + B span evaluations of every block layer)."""
    import attacks.dager as dager_module
    import attacks.dager_certificate as certificate_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[2])
        return certificate(*args, **kwargs)

    monkeypatch.setattr(dager_module, "certificate", counted)
    monkeypatch.setattr(certificate_module, "certificate", counted)
    (cell,) = cells(["dager"], 4, seeds=1)
    observed = observe(cell, CPU)
    recon = cell.attack.build().reconstruct(observed.obs)
    assert recon.info["certified"] is True and recon.info["searched_widths"] == []
    assert len(calls) == 1
    calls.clear()
    recon = cell.attack.build().reconstruct(replace(observed.obs,
                                                    update=noisy(observed.obs.update, 1e-3)))
    assert recon.info["certified"] is False and len(calls) == 1


def grads_of(obs):
    model = obs.model.to(CPU).eval()
    return model, dict(zip([n for n, p in model.named_parameters() if p.requires_grad],
                           obs.update.tensors))


def noisy(update, scale):
    from bench.contracts import Update

    gen = torch.Generator().manual_seed(0)
    return Update([g + scale * torch.randn(g.shape, generator=gen) for g in update.tensors])


def test_dager_swaps_in_the_sentences_that_explain_the_update():
    """The search's scores (the rest's span taken once, each candidate's new directions
    added) are the unexplained shares of the swapped batches; from a batch with two false
    sentences it swaps the true ones in, within its rounds, and returns it certified. A noisy
    update, which no batch explains, is not searched."""
    from dataclasses import replace

    from attacks.dager_certificate import block_weight_grads, explaining_batch, swap_shares
    from attacks.dager_spans import block_linears, layer_inputs

    (cell,) = cells(["dager"], 4, seeds=1, dataset=CLASSIFY)
    observed = observe(cell, CPU)
    model, grads = grads_of(observed.obs)
    true = observed.x01.long().tolist()
    false = [[(t + 1) % 1000 for t in true[0]], true[1][:6] + true[2][6:]]
    batch = [false[0], true[1], false[1], true[3]]
    pool = [true[2], false[0], true[0], [7] * 12]
    ids = torch.tensor(batch + pool)
    rows = {n: x.double() for n, x in layer_inputs(model, block_linears(model), ids).items()}
    g64 = block_weight_grads(grads)
    shares = swap_shares(rows, g64, [0, 1, 2, 3], 2, [4, 6, 7])
    for share, k in zip(shares.tolist(), [4, 6, 7]):
        swapped = ids[[0, 1, k, 3]]
        assert share == pytest.approx(unexplained_energy(model, g64, swapped), rel=1e-3)
    found, swaps, share = explaining_batch(model, grads, pool, batch, CPU, rounds=4)
    assert sorted(found) == sorted(true) and swaps == 2
    assert certificate(model, grads, found, CPU) == (share, True)
    assert explaining_batch(model, grads, pool, batch, CPU, rounds=1)[:2] == (None, 1)
    recon = cell.attack.build().reconstruct(replace(observed.obs,
                                                    update=noisy(observed.obs.update, 1e-3)))
    assert recon.info["searched_widths"] == [] and recon.info["certified"] is False


def test_dager_search_returns_only_a_certified_batch_and_repeats_a_needed_sentence():
    """A review's findings: on an update with noise too small to raise the first layer's rank,
    swaps that explain slightly more fit the noise (the true batch, holding (2, 1) twice, had
    its repeat swapped for a false sentence): only a certified batch is returned now. On
    the clean update, the false sentence beside the true ones is dropped and a needed one
    repeated in its place, which the swaps alone (never adding a sentence already chosen)
    could not do."""
    from dataclasses import replace

    from attacks.dager_certificate import explaining_batch

    short = {"pydoc": {"task": "lm", "seq_len": 2}}
    cell = cells(["dager"], 4, seeds=2, dataset=short)[-1]
    observed = observe(cell, CPU)
    true = observed.x01.long().tolist()
    assert len({tuple(t) for t in true}) == 3  # one sentence twice
    pool = [[40, 3], [9, 11], [2, 7]]
    model, grads = grads_of(observed.obs)
    spare = [t for i, t in enumerate(true) if t not in true[:i]] + [[9, 11]]
    found, swaps, _ = explaining_batch(model, grads, pool, spare, CPU, rounds=4)
    assert found is not None and swaps == 0
    assert {tuple(t) for t in found} == {tuple(t) for t in true} and len(found) == 4
    shaken = replace(observed.obs, update=noisy(observed.obs.update, 1e-6))
    model, grads = grads_of(shaken)
    assert explaining_batch(model, grads, pool, true, CPU, rounds=4)[0] is None


def test_dager_bound_is_the_dimension_the_candidate_rows_span():
    """LayerNorm at init (gain 1, bias 0) puts every candidate row in the (d−1)-dimensional
    plane of zero-sum vectors: at B·L = d − 1 = 35 the gradient's span is that whole plane and
    every token passes the first-layer check, so the bound is exceeded there, not at d."""
    short = {"pydoc": {"task": "lm", "seq_len": 7}}
    (below,) = cells(["dager"], 4, seeds=1, width=36, dataset=short)  # 28 rows
    (at,) = cells(["dager"], 5, seeds=1, width=36, dataset=short)  # 35 rows
    info = attack(at, observe(at, CPU).obs).recon.info
    assert info["rows"] == 35 and info["bound_exceeded"] is True
    assert info["candidate_dim"] == 35
    assert info["tokens_in_span"] > 35  # non-batch tokens pass: the check is vacuous
    _, recon, metrics, _ = scored(below)
    assert recon.info["bound_exceeded"] is False and metrics["exact"] == 1.0
    assert recon.info["candidate_dim"] == 35 and recon.info["tokens_in_span"] <= 28


def test_dager_reports_the_gradients_numerical_rank():
    # repeated rows (the same token at the same position) add no direction to the gradient
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 16, generator=g)
    grad = torch.randn(48, 8, generator=g) @ torch.cat([rows, rows[:2]])  # 8 rows, rank 6
    assert numerical_rank(grad) == 6
    assert numerical_rank(torch.zeros(4, 4)) == 0


@pytest.mark.parametrize("batch", [2, 4])
def test_dager_checks_sequences_at_the_one_blocks_later_layers(batch):
    """With one block the sequences are still checked: its attention output and MLP maps
    see a function of the prefix (the attention is causal)."""
    for cell in cells(["dager"], batch, width=64, layers=1,
                      dataset={"pydoc": {"task": "lm", "seq_len": 8}}):
        observed, recon, metrics, ids = scored(cell)
        assert metrics["exact"] == 1.0
        assert sorted(map(tuple, ids.tolist())) == sorted(map(tuple, observed.x01.tolist()))
        assert recon.info["layers_checked"] == 3  # 0.proj, 0.mlp.0, 0.mlp.2


SMALL = {"pydoc": {"task": "classify", "seq_len": 6}}


def test_dlg_on_text_recovers_single_sentences_and_reports_text_metrics():
    """DLG's claim (a single sentence recovered token-wise) holds on some seeds; others stall.
    With DLG's fixed L-BFGS steps about one start in four succeeds here, and which seed does
    depends on the CPU's kernels (of seeds 0–7 on an AMD EPYC AVX2: seed 1, and with ATen's
    unvectorised kernels seeds 1 and 7), so 3 seeds rested on one. With a strong-Wolfe
    search, 5 of 6 seeds reach token accuracy 0.67 or more there and 4 of 6 recover the
    sentence: the test needs one of 6."""
    results = []
    for cell in cells([{"dlg": {"steps": 10, "line_search": "strong_wolfe"}}], 1, seeds=6,
                      width=32, dataset=SMALL):
        _, recon, metrics, ids = scored(cell)
        assert recon.grad_evals <= 200 and ids.shape == (1, 6)
        assert set(metrics) >= {"token_acc", "exact", "rouge1", "rouge2", "rougel"}
        assert recon.loss_trace[-1] < recon.loss_trace[0]  # the gradient distance went down
        results.append(metrics["token_acc"])
    assert max(results) >= 0.99, results


def test_tag_reports_text_metrics_and_labels():
    for cell in cells([{"tag": {"iterations": 30}}], 2, seeds=2, width=32, dataset=SMALL):
        _, recon, metrics, _ = scored(cell)
        assert recon.grad_evals == 30 and recon.labels.shape == (2,)
        for name in ("token_acc", "exact", "rouge1", "rouge2", "rougel"):
            assert 0.0 <= metrics[name] <= 1.0
        assert recon.loss_trace[-1] < recon.loss_trace[0]  # the L2 + α·L1 distance went down
        # every 10th loss (1, 11, 21) and the last (30): final_loss, which ranks restarts,
        # had been the 21st
        assert len(recon.loss_trace) == 4 and recon.info["final_loss"] == recon.loss_trace[-1]


def test_tag_logs_its_last_loss_once():
    (cell,) = cells([{"tag": {"iterations": 21}}], 1, seeds=1, width=32, dataset=SMALL)
    recon = attack(cell, observe(cell, CPU).obs).recon
    assert recon.iterations == 21 and len(recon.loss_trace) == 3  # 1, 11, 21: no repeat


def test_text_attacks_are_deterministic_per_cell():
    (cell,) = cells([{"tag": {"iterations": 5}}], 1, seeds=1, width=32, dataset=SMALL)
    first, second = (attack(cell, observe(cell, CPU).obs).recon for _ in range(2))
    assert torch.equal(first.data, second.data)


def test_dlg_on_text_runs_torchs_lbfgs_with_the_cells_line_search(monkeypatch):
    made = []
    lbfgs = torch.optim.LBFGS

    def recording(*args, **kwargs):
        made.append(kwargs)
        return lbfgs(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "LBFGS", recording)
    (cell,) = cells([{"dlg": {"steps": 2, "line_search": "strong_wolfe", "history_size": 7}}],
                    1, seeds=1, width=32, dataset=SMALL)
    recon = attack(cell, observe(cell, CPU).obs).recon
    assert [(m["line_search_fn"], m["history_size"]) for m in made] == [("strong_wolfe", 7)]
    assert recon.loss_trace[-1] < recon.loss_trace[0]


@pytest.mark.parametrize("line_search", ["none", "strong_wolfe"])
def test_dlg_on_text_keeps_to_the_evaluation_cap(line_search):
    # a strong-Wolfe step may evaluate max_eval + 1 times: its max_eval is cut to fit the cap
    for cap in (1, 5, 12):
        suite = make_suite(datasets=[SMALL], archs=[{"transformer": {"width": 32}}],
                           attacks=[{"dlg": {"steps": 50, "line_search": line_search}}],
                           budget={"max_grad_evals": cap})
        (cell,) = attack_cells(suite)
        recon = attack(cell, observe(cell, CPU).obs).recon
        assert recon.grad_evals <= cap
        assert recon.grad_evals >= cap - 1  # the budget is used (a search needs 2)


def dlg_text(budget=None, **params):
    suite = make_suite(datasets=[SMALL], archs=[{"transformer": {"width": 32}}],
                       attacks=[{"dlg": params}], **({"budget": budget} if budget else {}))
    (cell,) = attack_cells(suite)
    return attack(cell, observe(cell, CPU).obs).recon


def test_dlg_on_text_stops_at_its_steps_and_the_suites_max_iterations():
    # a step of 1e-12 ends each L-BFGS step early (tolerance_change): another step is not
    # a free one, as the image path counts them
    recon = dlg_text(steps=3, lr=1e-12)
    assert recon.iterations == 3 and recon.info["stop_reason"] == "steps"
    capped = dlg_text(budget={"max_iterations": 3}, steps=50, lr=1e-12)
    assert capped.iterations == 3 and capped.grad_evals <= 3 * 20


@pytest.mark.parametrize("patience", [1, 2])
def test_dlg_on_text_stops_on_a_plateau_as_the_image_path_does(patience):
    # min_rel_improvement 1: no step gains its whole loss, so the patience rule stops the run
    # once it has `patience` steps to compare
    recon = dlg_text(steps=6, patience=patience, min_rel_improvement=1.0)
    assert recon.iterations == patience + 1 and recon.info["stop_reason"] == "patience"
    assert dlg_text(steps=6, patience=0, min_rel_improvement=1.0).iterations == 6


def test_tag_whose_last_step_leaves_non_finite_embeddings_is_a_diverged_record(monkeypatch):
    # a step from a finite loss that leaves a non-finite dummy (here forced): no token is
    # nearest to it, so the cell is diverged, not scored on argmax(nan)
    adam = torch.optim.Adam

    class Overflowing(adam):
        def step(self, closure=None):
            out = super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
            return out

    monkeypatch.setattr(torch.optim, "Adam", Overflowing)
    (cell,) = cells([{"tag": {"iterations": 1}}], 1, seeds=1, width=32, dataset=SMALL)
    record = run_record(cell)
    assert record["status"] == "diverged" and record["attack_info"]["diverged"] is True


@pytest.fixture
def evaluations(monkeypatch):
    """Every loss text DLG evaluates, every model output it evaluates it at, and, per run,
    the model's output at the embeddings it returns with how many of each came before."""
    import attacks.dlg as dlg_module
    import attacks.text_matching as tm

    seen: dict = {"losses": [], "outputs": [], "returned": []}
    distance, loss, nearest = dlg_module.l2_distance, tm.training_loss, tm.nearest_tokens

    def distance_seen(grads, target):
        value = distance(grads, target)
        seen["losses"].append(float(value.detach()))
        return value

    def loss_seen(out, soft):
        seen["outputs"].append(out.detach().clone())
        return loss(out, soft)

    def nearest_seen(model, emb):
        seen["returned"].append((model(emb).detach().clone(), len(seen["losses"])))
        return nearest(model, emb)

    monkeypatch.setattr(dlg_module, "l2_distance", distance_seen)
    monkeypatch.setattr(tm, "training_loss", loss_seen)
    monkeypatch.setattr(tm, "nearest_tokens", nearest_seen)
    return seen


def test_dlg_on_text_runs_its_restarts_and_keeps_the_lowest_final_loss(evaluations):
    from bench.registry import ATTACKS

    suite = make_suite(datasets=[SMALL], archs=[{"transformer": {"width": 32}}],
                       attacks=[{"dlg": {"steps": 4, "restarts": 3}}])
    (cell,) = attack_cells(suite)
    best = attack(cell, observe(cell, CPU).obs).recon
    first_of_restart_0 = evaluations["losses"][0]
    evaluations["losses"].clear()
    # the same cell's observation attacked once: the first restart is that lone run's draw
    lone = ATTACKS.get("dlg").cls(steps=4).reconstruct(observe(cell, CPU).obs)
    losses = best.info["restart_losses"]
    assert best.info["restarts_run"] == 3 and len(set(losses)) == 3  # three different draws
    assert evaluations["losses"][0] == first_of_restart_0
    assert best.info["final_loss"] == min(losses) == losses[best.info["best_restart"]]
    assert lone.iterations < best.iterations <= 3 * 4 and best.grad_evals > lone.grad_evals
    # the suite's caps are shared between the restarts
    capped = dlg_text(budget={"max_grad_evals": 30}, steps=50, restarts=3)
    assert capped.info["restarts_run"] == 3 and capped.grad_evals <= 30


@pytest.mark.parametrize("line_search", ["none", "strong_wolfe"])
def test_dlg_text_restarts_are_ranked_by_the_loss_of_the_points_they_return(evaluations,
                                                                           line_search):
    # torch's L-BFGS step returns the loss at the step's start, before its moves (with fixed
    # steps the last move is never evaluated): a restart's last evaluation must be at the
    # embeddings it returns, and that loss is the one it is ranked by
    recon = dlg_text(steps=4, restarts=3, line_search=line_search)
    assert len(evaluations["returned"]) == 3
    for k, (out, evaluated) in enumerate(evaluations["returned"]):
        assert torch.equal(evaluations["outputs"][evaluated - 1], out), k
        assert recon.info["restart_losses"][k] == evaluations["losses"][evaluated - 1]
    assert recon.grad_evals == len(evaluations["losses"])


def test_dager_keeps_a_true_sentence_made_of_rows_the_others_already_span():
    """"the dog sat" beside "the cat sat" and "a dog ran": each of its (token, position)
    first-block rows is in another sentence, as a false crossing's would be, but it passed
    the later layers' checks. DAGER had skipped it and repeated another sentence in its
    place, with ``bound_exceeded`` false (a text-track hunt)."""
    from attacks.dager import Dager
    from bench.archs.transformer import TinyTransformer, Transformer
    from bench.client import compute_update
    from bench.contracts import ClientSpec, Observation
    from bench.domains import TokenDomain

    batch = torch.tensor([[5, 7, 9, 11], [6, 8, 10, 12], [5, 8, 10, 11]])
    torch.manual_seed(0)
    model = TinyTransformer(50, 4, 64, 2, 4, 128, 4, per_position=False)
    Transformer().init_weights(model, torch.Generator().manual_seed(0))
    update = compute_update(model, batch, torch.tensor([0, 1, 2]), ClientSpec())
    obs = Observation(model, update, 3, TokenDomain((4,), 50, task="classify"), 4,
                      ClientSpec())
    recon = Dager().reconstruct(obs)
    assert recon.info["bound_exceeded"] is False
    assert sorted(map(tuple, recon.data.tolist())) == sorted(map(tuple, batch.tolist()))


def test_dager_ranks_a_true_sentence_above_a_false_one_that_ties_it_at_the_worst_step():
    """[7]*12 beside [8, 9]*6 on the text suite's trained victim: a false sequence that
    follows the second sentence and leaves it in its last tokens shares the true one's worst
    step (in their common prefix); ranked by that step alone it took the true one's place,
    with ``bound_exceeded`` false (a text-track hunt)."""
    from dataclasses import replace

    from attacks.dager import worst_first
    from bench.client import training_loss
    from bench.contracts import Update

    assert worst_first((-9.0, -3.0, -5.0)) == (-3.0, -5.0, -9.0)
    batch = torch.tensor([[7] * 12, [8, 9] * 6])
    (cell,) = cells(["dager"], 2, seeds=1, dataset=CLASSIFY, victim="trained:50")
    obs = observe(cell, CPU).obs
    model = obs.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(training_loss(model(batch), torch.tensor([0, 0])), params)
    recon = cell.attack.build().reconstruct(replace(obs, update=Update([g.detach()
                                                                       for g in grads])))
    assert recon.info["bound_exceeded"] is False
    assert sorted(map(tuple, recon.data.tolist())) == sorted(map(tuple, batch.tolist()))
