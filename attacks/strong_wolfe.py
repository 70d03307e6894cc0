"""A strong-Wolfe line search as a coroutine, so that K trials can each run their own.

Nocedal & Wright, Numerical Optimization (2nd ed.), Algorithms 3.5 (bracketing) and 3.6
(zoom) with cubic interpolation (eq. 3.59), with the constants and safeguards of
``torch.optim.LBFGS(line_search_fn="strong_wolfe")`` (sufficient decrease ``c1 = 1e-4``,
curvature ``c2 = 0.9``, extrapolation into ``[t + 0.01 (t - t_prev), 10 t]``, a zoom point
kept 10 % of the bracket away from its ends, at most 25 evaluations after the first), so
that a trial of :mod:`attacks.batched_lbfgs` follows the same path as torch's optimiser.

Why a coroutine: the batched optimiser evaluates every trial's objective in one vectorised
call, so a line search cannot call the objective itself. :func:`strong_wolfe` yields the
step length it wants evaluated and is sent back ``(loss, directional derivative, payload)``
for it; it returns the accepted :class:`Point`, whose ``payload`` (the caller's gradient at
that point) saves re-evaluating it, and whether its evaluations ran out. Each trial's search
reads only its own values.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    """A step length ``t`` along the search direction, the loss there and its slope."""

    t: float
    f: float
    gtd: float  # the directional derivative g(x + t d) . d
    payload: Any = None  # what the caller sent with it (its gradient there)


LineSearch = Generator[float, tuple[float, float, Any], tuple[Point, bool]]


def _divide(n: float, d: float) -> float:
    """``n / d`` in IEEE arithmetic, as torch's 0-d tensors divide: ±inf or NaN where ``d``
    is 0 (Python's floats raise there)."""
    if d != 0.0:
        return n / d
    if n == 0.0 or math.isnan(n):
        return math.nan
    return math.copysign(math.inf, n) * math.copysign(1.0, d)


def cubic_minimiser(a: Point, b: Point, bounds: tuple[float, float] | None = None) -> float:
    """The minimiser of the cubic matching the losses and slopes at ``a`` and ``b``
    (Nocedal & Wright eq. 3.59), clipped to ``bounds`` (default: the interval between them);
    the interval's midpoint where the cubic has no minimiser. In IEEE arithmetic, as torch's
    ``_cubic_interpolate`` computes it: where the formula divides by zero (a linear stretch,
    equal slopes, whose discriminant rounds to ≥ 0), the ±inf clips to a bound instead of
    Python raising; where it rounds below 0, the midpoint, as torch. Where torch's would be
    NaN (0/0), the midpoint. On such a stretch one rounding decides, in torch too."""
    low, high = bounds if bounds is not None else (min(a.t, b.t), max(a.t, b.t))
    if a.t > b.t:
        a, b = b, a
    d1 = a.gtd + b.gtd - 3 * _divide(a.f - b.f, a.t - b.t)
    disc = d1 * d1 - a.gtd * b.gtd
    if not disc >= 0:  # no real minimiser (or NaN)
        return (low + high) / 2
    d2 = math.sqrt(disc)
    t = b.t - (b.t - a.t) * _divide(b.gtd + d2 - d1, b.gtd - a.gtd + 2 * d2)
    if math.isnan(t):
        return (low + high) / 2
    return min(max(t, low), high)


def strong_wolfe(f0: float, gtd0: float, t: float, d_max: float, start: Any = None,
                 c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                 max_ls: int = 25) -> LineSearch:
    """Search along a descent direction ``d`` (``gtd0 = g.d < 0``) from step ``t`` for a point
    meeting the strong Wolfe conditions ``f(t) <= f0 + c1 t gtd0`` and ``|g(t).d| <= c2
    |gtd0|``. ``d_max = max|d|`` scales the bracket's width for the ``tolerance_change`` stop;
    ``start`` is the payload of the origin (t = 0). Uses at most ``max_ls + 1`` evaluations.
    Returns ``(point, exhausted)``: a strong-Wolfe point, or else the lower end of the final
    bracket (the lower of the origin and the last point where the evaluations ran out while
    extrapolating, as torch does); ``exhausted`` when the evaluations ran out."""
    origin = Point(0.0, f0, gtd0, start)

    def sufficient(p: Point) -> bool:
        return not p.f > f0 + c1 * p.t * gtd0

    def flat(p: Point) -> bool:
        return abs(p.gtd) <= -c2 * gtd0

    prev, cur = origin, Point(t, *(yield t))
    extra = 0  # evaluations after the first one (torch's ls_iter)
    bracket: list[Point] | None = None
    while extra < max_ls:  # Algorithm 3.5: grow the step until a minimiser is bracketed
        if not sufficient(cur) or (extra > 1 and cur.f >= prev.f):
            bracket = [prev, cur]
            break
        if flat(cur):
            return cur, False
        if cur.gtd >= 0:
            bracket = [prev, cur]
            break
        nxt = cubic_minimiser(prev, cur, (cur.t + 0.01 * (cur.t - prev.t), 10 * cur.t))
        prev, cur = cur, Point(nxt, *(yield nxt))
        extra += 1
    if bracket is None:  # the evaluations ran out while extrapolating
        return (origin if origin.f <= cur.f else cur), True
    # Algorithm 3.6: shrink the bracket. Its ends keep their positions, and on equal losses
    # the first is the low end, as in torch (ties decide the path on flat stretches)
    lo = 0 if bracket[0].f <= bracket[1].f else 1
    stuck = False
    while extra < max_ls:
        low, high = bracket[lo], bracket[1 - lo]
        if abs(high.t - low.t) * d_max < tolerance_change:
            return low, False
        nxt = cubic_minimiser(low, high)
        top, bottom = max(low.t, high.t), min(low.t, high.t)
        margin = 0.1 * (top - bottom)
        if min(top - nxt, nxt - bottom) < margin:  # too close to an end: progress is slow
            if stuck or nxt >= top or nxt <= bottom:
                nxt = top - margin if abs(nxt - top) < abs(nxt - bottom) else bottom + margin
                stuck = False
            else:
                stuck = True
        else:
            stuck = False
        new = Point(nxt, *(yield nxt))
        extra += 1
        if not sufficient(new) or new.f >= low.f:
            bracket[1 - lo] = new
            lo = 0 if bracket[0].f <= bracket[1].f else 1
        elif flat(new):
            return new, False
        else:
            if new.gtd * (high.t - low.t) >= 0:
                bracket[1 - lo] = low
            bracket[lo] = new
    return bracket[lo], True
