"""The strong-Wolfe line search coroutine (issue #12): torch's search, one evaluation at a time."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from attacks.strong_wolfe import Point, cubic_minimiser, strong_wolfe

F64 = torch.float64


def rosen(x: torch.Tensor) -> torch.Tensor:
    return ((1 - x[:-1]) ** 2).sum() + 10 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    loss = rosen(x)
    (g,) = torch.autograd.grad(loss, x)
    return loss.item(), g


def drive(search, phi):
    """Run the coroutine on ``phi(t) -> (f, slope, payload)``: (accepted point, whether the
    evaluations ran out, evaluations)."""
    t, evals = next(search), 0
    while True:
        evals += 1
        try:
            t = search.send(phi(t))
        except StopIteration as done:
            return (*done.value, evals)


def torchs_search():
    """torch.optim.lbfgs._strong_wolfe (private): the reference, where this torch has it."""
    reference = getattr(importlib.import_module("torch.optim.lbfgs"), "_strong_wolfe", None)
    if reference is None:
        pytest.skip("this torch has no torch.optim.lbfgs._strong_wolfe")
    return reference


def test_the_search_is_torchs_search_on_random_rosenbrock_lines():
    reference = torchs_search()
    gen = torch.Generator().manual_seed(0)
    for case in range(300):
        x = 1.5 * torch.randn(8, generator=gen, dtype=F64)
        f, g = loss_and_grad(x)
        d = -g * 2 * torch.rand(8, generator=gen, dtype=F64)  # a descent direction
        t0 = 10 ** (4 * torch.rand(1, generator=gen).item() - 3)
        max_ls = (0, 1, 3, 25)[case % 4]

        def obj(xx, t, dd):
            return loss_and_grad(xx + t * dd)

        f_t, _, t_t, n_t = reference(obj, x, t0, d, f, g, g.dot(d), max_ls=max_ls)

        def phi(t, x=x, d=d):
            ft, gt = loss_and_grad(x + t * d)
            return ft, gt.dot(d).item(), t

        point, exhausted, evals = drive(strong_wolfe(f, g.dot(d).item(), t0,
                                                     d.abs().max().item(), start=0.0,
                                                     max_ls=max_ls), phi)
        assert evals == n_t <= max_ls + 1
        if exhausted:
            assert evals == max_ls + 1
        assert point.t == pytest.approx(float(t_t), rel=1e-9, abs=1e-15)
        assert point.f == pytest.approx(float(f_t), rel=1e-9, abs=1e-15)
        assert point.payload == point.t  # the payload sent with the accepted point


@pytest.mark.parametrize("t0", [1e-3, 0.3, 1.0, 5.0, 40.0])
def test_the_accepted_point_meets_the_strong_wolfe_conditions(t0):
    # phi(t) = (t - 2)^2 + sin(3t)/3 from t = 0: a descent direction with several minima
    def phi(t):
        return (t - 2) ** 2 + math.sin(3 * t) / 3, 2 * (t - 2) + math.cos(3 * t), None

    f0, gtd0, _ = phi(0.0)
    point, exhausted, evals = drive(strong_wolfe(f0, gtd0, t0, 1.0), phi)
    assert not exhausted
    assert point.f <= f0 + 1e-4 * point.t * gtd0  # sufficient decrease
    assert abs(point.gtd) <= 0.9 * abs(gtd0)  # curvature, strong form
    assert evals <= 26


def test_without_evaluations_to_spare_it_keeps_the_lower_of_start_and_first_point():
    def rising(t):
        return 10.0 + t, 1.0, "there"

    point, exhausted, evals = drive(strong_wolfe(1.0, -1.0, 1.0, 1.0, start="origin",
                                                 max_ls=0), rising)
    assert (point.t, point.payload, exhausted, evals) == (0.0, "origin", True, 1)
    point, exhausted, _ = drive(strong_wolfe(20.0, -1.0, 1.0, 1.0, start="origin", max_ls=0),
                                rising)
    assert (point.t, point.payload, exhausted) == (1.0, "there", True)


def plateau(t: float) -> tuple[float, float, None]:
    """f(0) = 0 with slope -1; f = -0.5 on (0.2, 2] (slope +1 there): zoom points tie."""
    if t <= 0.2:
        return -t, -1.0, None
    return (-0.5, 1.0, None) if t <= 2 else (1.0, 1.0, None)


@pytest.mark.parametrize("max_ls", [2, 3, 25])
def test_equal_losses_in_the_zoom_are_ranked_as_torch_ranks_them(max_ls):
    # the bracket's ends keep their positions and a tie makes the first one the low end:
    # keeping the older low end instead accepts t = 1 here where torch accepts 0.7676
    reference = torchs_search()
    one = torch.ones(1, dtype=F64)

    def obj(x, t, d):
        f, slope, _ = plateau(float(t))
        return f, torch.tensor([slope], dtype=F64)

    f_t, _, t_t, n_t = reference(obj, torch.zeros(1, dtype=F64), 1.0, one, 0.0, -one,
                                 torch.tensor(-1.0, dtype=F64), max_ls=max_ls)
    point, _, evals = drive(strong_wolfe(0.0, -1.0, 1.0, 1.0, max_ls=max_ls), plateau)
    assert (point.t, point.f, evals) == (pytest.approx(float(t_t), rel=1e-12), float(f_t), n_t)


def test_cubic_minimiser():
    quad = [Point(t, (t - 2) ** 2, 2 * (t - 2)) for t in (0.0, 5.0)]  # a cubic fits exactly
    assert cubic_minimiser(*quad) == pytest.approx(2.0)
    assert cubic_minimiser(*quad[::-1]) == pytest.approx(2.0)  # either order
    assert cubic_minimiser(*quad, bounds=(3.0, 4.0)) == 3.0  # clipped
    # no minimiser (the discriminant is negative) or a zero-width interval: the midpoint
    assert cubic_minimiser(Point(0, 0, 1), Point(1, 2 / 3, 1), bounds=(0.0, 1.0)) == 0.5
    assert cubic_minimiser(Point(1, 0, -1), Point(1, 0, -1), bounds=(0.0, 2.0)) == 1.0
