"""The L-BFGS direction in the compact form of Byrd, Nocedal and Schnabel (1994).

:mod:`attacks.batched_lbfgs` keeps each trial's curvature pairs in a ring of slots with their
inner products (``sy[i, j] = s_i.y_j``, ``yy[i, j] = y_i.y_j``, float64) and asks here for the
direction ``-H g``: the same matrix as torch's two-loop recursion, in a fixed number of kernel
calls per iteration rather than four per pair.
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


def compact_direction(g: torch.Tensor, gamma: float, s: torch.Tensor, y: torch.Tensor,
                      sy: torch.Tensor, yy: torch.Tensor, head: int) -> torch.Tensor:
    """One trial's L-BFGS direction ``-H g`` from its L curvature pairs, in the compact form.

    Byrd, Nocedal, Schnabel 1994 (Thm 2.2): with the pairs ``S``, ``Y`` oldest-first, ``R``
    the upper triangle of ``S^T Y``, ``D`` its diagonal and ``H0 = gamma I``,
    ``H g = gamma g + S p - gamma Y u`` where ``R u = S^T g`` and
    ``R^T p = (D + gamma Y^T Y) u - gamma Y^T g``. It equals the two-loop recursion in exact
    arithmetic. Per iteration: four products with the history (``S^T g``, ``Y^T g``, ``S p``,
    ``Y u``), two L x L triangular solves and one L x L product in float64, where the two-loop
    makes four kernel calls per pair: fewer calls, not less memory traffic.

    ``s``, ``y`` [L, n] hold the pairs in ring slots, the oldest at slot ``head``;
    ``sy[i, j] = s_i.y_j`` (only where slot i is not newer than slot j: the upper triangle in
    age order is all that is read; its diagonal is ``D``) and ``yy[i, j] = y_i.y_j`` (float64)
    are indexed by slot.
    """
    if s.shape[0] == 0:
        return -gamma * g
    wide = sy.dtype
    a, b = (s @ g).to(wide).unsqueeze(1), (y @ g).to(wide).unsqueeze(1)  # S^T g, Y^T g
    u = _solve_r(sy, a, head, transpose=False)
    rhs = sy.diagonal().unsqueeze(1) * u + gamma * (yy @ u) - gamma * b
    p = _solve_r(sy, rhs, head, transpose=True).squeeze(1)
    u = u.squeeze(1)
    return -(gamma * g + s.T @ p.to(g.dtype) - gamma * (y.T @ u.to(g.dtype)))
