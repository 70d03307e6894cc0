"""The L-BFGS direction in the compact form of Byrd, Nocedal and Schnabel (1994).

:mod:`attacks.batched_lbfgs` keeps each trial's curvature pairs in a ring of slots with their
inner products (``sy[i, j] = s_i.y_j``, ``yy[i, j] = y_i.y_j``, float64) and asks here for the
direction ``-H g``: the same matrix as torch's two-loop recursion, in a fixed number of kernel
calls per iteration rather than four per pair. :class:`CurvatureHistory` is that ring.
"""

from __future__ import annotations

import torch


def _solve_r(sy: torch.Tensor, rhs: torch.Tensor, head: int, transpose: bool) -> torch.Tensor:
    """Solve ``R v = rhs`` (or ``R^T v = rhs``) for the upper triangle ``R`` of ``sy`` in age
    order, where the ring's oldest slot is ``head`` (slots ``head..L-1`` then ``0..head-1``).
    All by slot: ``R`` in age order is the block matrix [[R_AA, sy[A, B]], [0, R_BB]] over the
    older slots A = head.. and the newer B = ..head, solved by blocks on views (no reordered
    copy of the L x L matrix)."""
    def tri(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if transpose:
            return torch.linalg.solve_triangular(m.T, v, upper=False)
        return torch.linalg.solve_triangular(m, v, upper=True)  # reads the upper triangle

    if head == 0:
        return tri(sy, rhs)
    older, newer, cross = sy[head:, head:], sy[:head, :head], sy[head:, :head]
    if transpose:  # R^T = [[R_AA^T, 0], [cross^T, R_BB^T]]
        v_old = tri(older, rhs[head:])
        v_new = tri(newer, rhs[:head] - cross.T @ v_old)
    else:
        v_new = tri(newer, rhs[:head])
        v_old = tri(older, rhs[head:] - cross @ v_new)
    return torch.cat([v_new, v_old])


def compact_direction(g: torch.Tensor, gamma: float, pairs: torch.Tensor,
                      sy: torch.Tensor, yy: torch.Tensor, head: int) -> torch.Tensor:
    """One trial's L-BFGS direction ``-H g`` from its L curvature pairs, in the compact form.

    Byrd, Nocedal, Schnabel 1994 (Thm 2.2): with the pairs ``S``, ``Y`` oldest-first, ``R``
    the upper triangle of ``S^T Y``, ``D`` its diagonal and ``H0 = gamma I``,
    ``H g = gamma g + S p - gamma Y u`` where ``R u = S^T g`` and
    ``R^T p = (D + gamma Y^T Y) u - gamma Y^T g``. It equals the two-loop recursion in exact
    arithmetic. Per iteration: two passes over the history (``[S Y]^T g`` and
    ``[S Y] [p; -gamma u]``, each one matrix-vector product because slot i stores ``s_i``
    and ``y_i`` side by side), two L x L triangular solves and one L x L product in float64,
    where the two-loop makes four kernel calls per pair: fewer calls, not less memory traffic.

    ``pairs`` [L, 2, n] holds the pairs in ring slots (``pairs[i] = (s_i, y_i)``), the oldest
    at slot ``head``; ``sy[i, j] = s_i.y_j`` (only where slot i is not newer than slot j: the
    upper triangle in age order is all that is read; its diagonal is ``D``) and
    ``yy[i, j] = y_i.y_j`` (float64) are indexed by slot.
    """
    length = pairs.shape[0]
    if length == 0:
        return -gamma * g
    wide = sy.dtype
    rows = pairs.reshape(2 * length, -1)  # s_0, y_0, s_1, y_1, ...
    ab = (rows @ g).to(wide).view(length, 2)  # S^T g and Y^T g, by slot
    u = _solve_r(sy, ab[:, :1], head, transpose=False)
    rhs = sy.diagonal().unsqueeze(1) * u + gamma * (yy @ u) - gamma * ab[:, 1:]
    p = _solve_r(sy, rhs, head, transpose=True)
    coeff = torch.cat([p, -gamma * u], 1).reshape(-1).to(g.dtype)  # p_0, -γu_0, p_1, ...
    return torch.addmv(g, rows.T, coeff, beta=-gamma, alpha=-1.0)  # -(γ g + S p - γ Y u)


class CurvatureHistory:
    """K trials' last ``m`` curvature pairs ``(s, y)`` each, in ring slots, with their inner
    products, and each trial's ``H0`` scale ``gamma = y.s / y.y`` of its newest pair.

    Memory: ``pairs`` [K, m, 2, n] in the variables' dtype, ``sy``/``yy`` [K, m, m] float64.
    Every method touches one trial's slices only, so trials never mix."""

    def __init__(self, trials: int, m: int, like: torch.Tensor) -> None:
        n = like.shape[-1]
        self.m = m
        self.pairs = like.new_zeros(trials, m, 2, n)  # pairs[k, slot] = (s, y), side by side
        self.sy = like.new_zeros(trials, m, m, dtype=torch.float64)  # s_i . y_j
        self.yy = like.new_zeros(trials, m, m, dtype=torch.float64)  # y_i . y_j
        self.length = [0] * trials
        self.head = [0] * trials  # the slot of the oldest pair (0 until the ring wraps)
        self.gamma = [1.0] * trials

    def reset(self, k: int) -> None:
        """Forget trial k's pairs (its first iteration)."""
        self.length[k], self.head[k], self.gamma[k] = 0, 0, 1.0

    def push(self, k: int, s: torch.Tensor, y: torch.Tensor, ys: float, gamma: float) -> None:
        """Keep trial k's new pair (the oldest one's slot once the ring is full), with its
        products with the kept ones in one pass over the history: the column s_i . y_new (its
        row, s_new . y_i, lies below the diagonal in age order and is never read),
        y_i . y_new, and on the diagonal ``ys``, the product that decided to keep it."""
        if self.m == 0:
            return
        if self.length[k] < self.m:
            slot = self.length[k]
            self.length[k] += 1
        else:
            slot = self.head[k]
            self.head[k] = (slot + 1) % self.m
        self.pairs[k, slot, 0], self.pairs[k, slot, 1] = s, y
        self.gamma[k] = gamma
        top = self.length[k]
        n = self.pairs.shape[-1]
        prod = (self.pairs[k, :top].reshape(2 * top, n) @ y).to(self.sy.dtype).view(top, 2)
        self.sy[k, :top, slot] = prod[:, 0]
        self.yy[k, :top, slot] = self.yy[k, slot, :top] = prod[:, 1]
        self.sy[k, slot, slot] = ys

    def direction(self, k: int, g: torch.Tensor) -> torch.Tensor:
        """Trial k's L-BFGS direction ``-H g``."""
        ln = self.length[k]
        return compact_direction(g, self.gamma[k], self.pairs[k, :ln], self.sy[k, :ln, :ln],
                                 self.yy[k, :ln, :ln], self.head[k])
