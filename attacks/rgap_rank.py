"""Rank analysis of R-GAP (Zhu & Blaschko, ICLR 2021, Sec. 4): do gradients pin the input down?

R-GAP recovers a network's input layer by layer, top down, from linear systems (see
:mod:`attacks.rgap`). Whether a layer's input is determined is a matter of counting: its
unknowns against the independent equations the gradient and the layer above provide. The
paper counts, per layer,

- **unknowns**: the entries of the layer's input (padding excluded: it is known to be 0);
- **gradient constraints**: one equation per weight, ``∇W = Σ_positions k · patch(x)``;
- **forward constraints**: one per output entry, ``W x = z`` with ``z = σ⁻¹(input of the
  layer above)``, valid when the layer above was recovered;
- **virtual constraints**: what the layer above actually hands down. When the layer above
  is fully determined these are all the forward constraints; when it is rank-deficient,
  only as many independent constraints on ``z`` as the layer above had (the rest of ``z`` is
  unknown). The paper calls these constraints, carried from layer to layer, virtual.

Counting equations is not enough: they are not independent. A convolution of at most
``NUMERICAL_UNKNOWNS`` unknowns gets the numerical ranks of its actual systems (its weights, a
generic output gradient ``k``; :func:`numerical_ranks`): the counts below miss identities
between output channels within one stride phase (C2→O2, k5, s2, p0 on 9×10: gradient rank 100
counted, 98 measured; C3→O6, k4, s3, p3 on 10×9: deficit 0 counted, 18 measured). A larger
one, where a dense eigendecomposition costs seconds, gets its generic (structural) rank,
which matches the numerical rank on the paper's networks and the configurations
tests/test_rank.py checks but can overstate it there; the table says which (``by``):

- gradient constraints of a convolution: each input channel has its own identical block.
  A kernel offset δ contributes ``min(O, L_δ)`` independent rows (O output channels, L_δ
  output positions whose read at δ is not padding), and offsets that read the same stride
  phase share the phase's input positions, so the rank per channel is
  ``Σ_phases min(#positions of the phase, Σ_{δ in phase} min(O, L_δ))``. For a linear layer
  ``∇W = k xᵀ`` determines all ``n`` inputs (given k ≠ 0);
- the forward constraints of a convolution count per output position at most the
  non-padding inputs its patch reads, ``min(O, C·|valid patch|)``;
- an input position no kernel offset reads (stride 2 without padding can skip the last row
  and column) is in no equation: the layer's rank is at most ``C ×`` the positions read.
  The layer below then has output positions nothing above reads: its output gradient is 0
  there and ``z`` unknown, so its gradient, forward and read positions are counted over
  the positions read (the pixels feeding only unread ones are free);
- the two blocks are linked by the identities ``Σ W[o'] · ∇W[o] = Σ_l k[o, l] z[o', l]`` (for
  every pair of output channels o, o'), which remove up to ``O · min(O, C·kh·kw, L)``
  equations.

A layer's **rank** is ``min(unknowns, gradient rank + virtual − dependencies)`` and its
**deficit** is ``unknowns − rank``: the directions of its input no gradient constrains.
Counted numerically, the rank is that of the gradient constraints stacked with the forward
ones (projected on ``virtual`` generic directions where the layer above is rank-deficient,
the counts' own assumption), and the dependencies are what that leaves of the sum.

**Risk index** (our summary of the paper's analysis, in [0, 1]): the product over layers of
the fraction of each layer's input that its own system pins down, ``Π_layers rank/unknowns``
(not a fraction of the network's input: a deficit handed down as virtual constraints is
counted at the layer that has it, so CNN6-d scores 0.919 while its input layer is determined).
1 means every layer is determined: the gradient reveals the input exactly (CNN6, FCN3);
below 1 the recursion meets a rank-deficient layer and can only return the minimum-norm
part of it (CNN6-d, whose narrowed second conv has 280 undetermined directions at 32×32).
A higher index means a higher risk. It is NaN for a network outside R-GAP's scope.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from attacks.rgap_chain import Chain, Stage, parse_chain
from attacks.rgap_gram import (
    conv_forward_gram,
    conv_gradient_gram,
    spatial_gradient_gram,
    valid_range,
)

MAX_RANK_PARAMETERS = 100_000_000
"""The largest network the rank analysis builds (400 MB of float32 weights), counted on
the meta device first: a hand-edited input shape or width had asked for tens of GB."""


NUMERICAL_UNKNOWNS = 2048
"""The most unknowns a convolution's rank is measured for (a dense n×n eigendecomposition,
about a second at 2048 on one core); above, it is counted."""

RELATIVE_TOLERANCE = 1e-9
"""Eigenvalues of the normalised float64 Gram below this fraction of the largest count as
zero (the measured gaps run from about 1e-2 down to 1e-15)."""


@dataclass(frozen=True)
class LayerRank:
    """The rank analysis of one layer (``index`` 0 is the bottom layer)."""

    index: int
    layer: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    unknowns: int
    gradient_constraints: int  # one per weight (and bias) entry
    gradient_rank: int  # independent gradient constraints
    forward_constraints: int  # one per output entry (0 at the top)
    virtual_constraints: int  # independent constraints handed down by the layer above
    dependencies: int  # identities linking gradient and forward constraints
    rank: int
    deficit: int
    method: str = "structural"  # or "numerical": see NUMERICAL_UNKNOWNS

    @property
    def determined(self) -> bool:
        return self.deficit == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "determined": self.determined}


def _describe(stage: Stage) -> str:
    m = stage.module
    if stage.kind == "conv":
        return (f"Conv2d({m.in_channels}→{m.out_channels}, k{m.kernel_size[0]}"
                f"{'' if m.kernel_size[0] == m.kernel_size[1] else 'x' + str(m.kernel_size[1])}"
                f", s{m.stride[0]}, p{m.padding[0]})")
    return f"Linear({m.in_features}→{m.out_features}{', bias' if m.bias is not None else ''})"


Positions = tuple[frozenset[int], frozenset[int]]
"""Output rows and columns of a convolution that the layer above reads (a product set)."""


def all_positions(stage: Stage) -> Positions:
    return frozenset(range(stage.out_shape[1])), frozenset(range(stage.out_shape[2]))


def _reads(n_out: int, stride: int, offset: int, pad: int, size: int,
           used: frozenset[int]) -> list[int]:
    """The used output positions whose read at ``offset`` is inside the input."""
    return [p for p in range(*valid_range(n_out, stride, offset, pad, size)) if p in used]


def _disjoint_groups(reads: list[set[int]]) -> list[tuple[set[int], list[int]]]:
    """Kernel offsets (along one axis) grouped so that two groups never read a common input
    position: ``(the positions a group reads, its offsets)``. Without holes in the outputs
    read these are the stride phases; a layer above that reads every other output splits
    a phase into offsets on disjoint sub-grids."""
    groups: list[tuple[set[int], list[int]]] = []
    for offset, read in enumerate(reads):
        positions, members, apart = set(read), [offset], []
        for group in groups:
            if group[0] & positions:
                positions |= group[0]
                members += group[1]
            else:
                apart.append(group)
        groups = [*apart, (positions, members)]
    return groups


def conv_gradient_rank(stage: Stage, out: Positions | None = None) -> int:
    """Structural rank of a convolution's gradient constraints (see the module docstring),
    over the output positions ``out`` (default all) the layer above reads: the output
    gradient is 0 at the others. Offsets that read disjoint input positions hold disjoint
    unknowns, so each group of them is counted on its own."""
    m = stage.module
    c, h, w = stage.in_shape
    o, ho, wo = stage.out_shape
    kh, kw = m.kernel_size
    (sh, sw), (ph, pw) = stage.stride, stage.padding
    used_rows, used_cols = out or all_positions(stage)
    ps = [_reads(ho, sh, i, ph, h, used_rows) for i in range(kh)]
    qs = [_reads(wo, sw, j, pw, w, used_cols) for j in range(kw)]
    total = 0
    for rows, row_offsets in _disjoint_groups([{p * sh + i - ph for p in ps[i]}
                                               for i in range(kh)]):
        for cols, col_offsets in _disjoint_groups([{q * sw + j - pw for q in qs[j]}
                                                   for j in range(kw)]):
            eqs = sum(min(o, len(ps[i]) * len(qs[j])) for i in row_offsets for j in col_offsets)
            total += min(len(rows) * len(cols), eqs)
    return c * total


def conv_read_sets(stage: Stage, out: Positions | None = None) -> Positions:
    """Input rows and columns that some kernel offset reads at some output position of
    ``out`` (default all): with stride 2 and no padding the last row or column may never be
    read, and no equation of the layer holds those pixels."""
    m = stage.module
    _, h, w = stage.in_shape
    _, ho, wo = stage.out_shape
    (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, stage.stride, stage.padding
    used_rows, used_cols = out or all_positions(stage)
    rows = {p * sh + i - ph for i in range(kh) for p in _reads(ho, sh, i, ph, h, used_rows)}
    cols = {q * sw + j - pw for j in range(kw) for q in _reads(wo, sw, j, pw, w, used_cols)}
    return frozenset(rows), frozenset(cols)


def conv_read_positions(stage: Stage, out: Positions | None = None) -> int:
    """How many input positions (per channel) :func:`conv_read_sets` holds."""
    rows, cols = conv_read_sets(stage, out)
    return len(rows) * len(cols)


def conv_forward_rank(stage: Stage, out: Positions | None = None) -> int:
    """Structural rank of a convolution's forward constraints ``W x = z`` at the output
    positions ``out`` (default all; ``z`` is unknown where the layer above reads nothing):
    per output position, at most as many independent rows as the non-padding inputs its
    patch reads (a border position under wide padding reads fewer than ``O``)."""
    m = stage.module
    c, h, w = stage.in_shape
    o, _, _ = stage.out_shape
    (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, stage.stride, stage.padding
    used_rows, used_cols = out or all_positions(stage)
    rows = [sum(0 <= p * sh + i - ph < h for i in range(kh)) for p in sorted(used_rows)]
    cols = [sum(0 <= q * sw + j - pw < w for j in range(kw)) for q in sorted(used_cols)]
    return sum(min(o, c * r * k) for r in rows for k in cols)


def _rank(gram: torch.Tensor) -> int:
    values = torch.linalg.eigvalsh(gram)
    top = float(values[-1])
    return int((values > RELATIVE_TOLERANCE * top).sum()) if top > 0 else 0


def _normalised(gram: torch.Tensor) -> torch.Tensor:
    scale = float(gram.diagonal().mean())
    return gram / scale if scale > 0 else gram


def numerical_ranks(stage: Stage, virtual: int, index: int = 0, out: Positions | None = None
                    ) -> tuple[int, int]:
    """The numerical ranks of a convolution's gradient constraints and of those stacked with
    ``virtual`` forward constraints, for its weights and a generic output gradient (drawn
    from ``index``; 0 at output positions outside ``out``, which the layer above never
    reads): the forward rows at ``out``, projected on ``virtual`` random directions where
    they are more (the layer above rank-deficient)."""
    m = stage.module
    c, h, w = stage.in_shape
    n = c * h * w
    gen = torch.Generator().manual_seed(index)
    k = torch.randn(stage.out_shape, generator=gen, dtype=torch.float64)
    used = torch.zeros(stage.out_shape[1:], dtype=torch.bool)
    rows_out, cols_out = out or all_positions(stage)
    used[sorted(rows_out)] = True
    used[:, sorted(set(range(stage.out_shape[2])) - cols_out)] = False
    k = k * used
    spatial = spatial_gradient_gram(k, (h, w), m.kernel_size, stage.stride, stage.padding)
    g_rank = c * _rank(spatial)  # the Gram is the spatial block once per input channel
    if g_rank == n or not virtual:
        return g_rank, g_rank
    grad = conv_gradient_gram(k, stage.in_shape, m.kernel_size, stage.stride, stage.padding,
                              spatial=spatial)
    weight = m.weight.detach().double()
    forward = stage.out_shape[0] * int(used.sum())
    if virtual >= forward and bool(used.all()):  # every forward constraint is known
        return g_rank, _rank(_normalised(grad) + _normalised(
            conv_forward_gram(weight, stage.in_shape, stage.stride, stage.padding)))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, h, w, c).permute(0, 3, 1, 2)
    rows = nn.functional.conv2d(basis, weight, None, stage.stride, stage.padding)
    rows = rows[:, :, used].reshape(n, -1).T  # the known outputs; channel-last unknowns
    if virtual >= forward:
        return g_rank, _rank(_normalised(grad) + _normalised(rows.T @ rows))
    q, _ = torch.linalg.qr(torch.randn(forward, virtual, generator=gen, dtype=torch.float64))
    rows = q.T @ rows
    return g_rank, _rank(_normalised(grad) + _normalised(rows.T @ rows))


def analyse_chain(chain: Chain) -> list[LayerRank]:
    """Per-layer counts of an R-GAP chain, bottom layer first."""
    stages = chain.stages
    out: list[LayerRank] = []
    above_rank: int | None = None
    read: Positions | None = None  # this layer's outputs the layer above reads (None: all)
    for idx in range(len(stages) - 1, -1, -1):
        st = stages[idx]
        n = math.prod(st.in_shape)
        m = st.module
        n_weights = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        if idx == len(stages) - 1:  # the top: ∇W = k xᵀ with k from the logit equation/bias
            g_rank, forward, virtual, dep = n, 0, 0, 0
        else:  # a conv's outputs the layer above never reads: no gradient, no known z
            positions = len(read[0]) * len(read[1]) if read else math.prod(st.out_shape[1:])
            forward = st.out_shape[0] * positions if st.kind == "conv" else st.out_shape[0]
            independent = conv_forward_rank(st, read) if st.kind == "conv" else min(forward, n)
            virtual = min(independent, above_rank if above_rank is not None else forward)
            if st.kind == "conv":
                g_rank = conv_gradient_rank(st, read)
                o = st.out_shape[0]
                patch = st.in_shape[0] * m.kernel_size[0] * m.kernel_size[1]
                dep = min(o * min(o, patch, positions), g_rank, virtual)
            else:
                g_rank = n
                dep = min(m.out_features, g_rank, virtual)
        readable = st.in_shape[0] * conv_read_positions(st, read) if st.kind == "conv" else n
        rank = min(readable, g_rank + virtual - dep)
        method = "structural"
        if st.kind == "conv" and idx < len(stages) - 1 and n <= NUMERICAL_UNKNOWNS:
            g_rank, rank = numerical_ranks(st, virtual, idx, read)
            dep, method = g_rank + virtual - rank, "numerical"
        out.append(LayerRank(idx, _describe(st), tuple(st.in_shape), tuple(st.out_shape), n,
                             n_weights, g_rank, forward, virtual, dep, rank, n - rank,
                             method))
        above_rank = rank
        read = conv_read_sets(st, read) if st.kind == "conv" else None
    return out[::-1]


def rank_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRank]:
    """The rank analysis of ``model`` on inputs of ``input_shape``; ValueError if out of scope."""
    chain, reason = parse_chain(model, tuple(input_shape))
    if chain is None:
        raise ValueError(f"R-GAP's rank analysis does not apply: {reason}")
    return analyse_chain(chain)


def index_from_layers(layers: list[LayerRank]) -> float:
    """Π rank/unknowns over the layers: the product of the fractions of each layer's input
    that its own system pins down (the risk index)."""
    out = 1.0
    for layer in layers:
        out *= layer.rank / layer.unknowns if layer.unknowns else 1.0
    return out


def risk_index(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The risk index of ``model`` (1 = fully determined by its gradient); NaN out of scope."""
    try:
        return index_from_layers(rank_layers(model, input_shape))
    except ValueError:
        return float("nan")


def format_rank_table(layers: list[LayerRank], title: str = "") -> str:
    """A plain-text table of the per-layer counts, top layer first, and the risk index."""
    head = ("layer", "input", "unknowns", "grad eqs", "grad rank", "forward", "virtual",
            "dependent", "rank", "deficit", "by")
    rows = [(f"{lr.index}: {lr.layer}", "×".join(map(str, lr.in_shape)), lr.unknowns,
             lr.gradient_constraints, lr.gradient_rank, lr.forward_constraints,
             lr.virtual_constraints, lr.dependencies, lr.rank, lr.deficit,
             "measured" if lr.method == "numerical" else "counted")
            for lr in reversed(layers)]
    widths = [max(len(str(v)) for v in col) for col in zip(head, *rows)]

    def line(values: tuple[Any, ...]) -> str:
        cells = [str(v).ljust(wd) if i < 2 else str(v).rjust(wd)
                 for i, (v, wd) in enumerate(zip(values, widths))]
        return "  ".join(cells).rstrip()

    out = [title] if title else []
    out += [line(head), "  ".join("-" * wd for wd in widths)]
    out += [line(r) for r in rows]
    risk = index_from_layers(layers)
    deficient = [lr for lr in layers if lr.deficit]
    verdict = ("every layer is determined: the gradient reveals the input" if not deficient
               else "rank-deficient at " + ", ".join(f"layer {lr.index} ({lr.deficit} free "
                                                       "directions)" for lr in deficient))
    out.append(f"risk index: {risk:.4f} ({verdict})")
    return "\n".join(out)


def rank_report(arch_name: str, arch_params: dict[str, Any], input_shape: tuple[int, int, int],
                num_classes: int) -> str:
    """The rank table of a registered architecture, as text (for ``leakbench rank``)."""
    from bench.registry import ARCHS

    arch = ARCHS.get(arch_name).cls(**(arch_params or {}))
    model = arch.build(tuple(input_shape), num_classes)
    params = ", ".join(f"{k}={v}" for k, v in (arch_params or {}).items())
    title = (f"R-GAP rank analysis of {arch_name}{f'({params})' if params else ''}"
             f" on {'×'.join(map(str, input_shape))} inputs, {num_classes} classes")
    try:
        layers = rank_layers(model, tuple(input_shape))
    except ValueError as e:
        return f"{title}\n{e}\nrisk index: n/a (outside R-GAP's scope)"
    return format_rank_table(layers, title)
