"""What a component's method returned, checked where it returns.

A plug-in attack that returns ``None``, or a defense that drops a tensor, had surfaced stages
later as ``score: AttributeError: 'NoneType' object has no attribute 'info'`` or ``attack:
IndexError``: the cell's error record named the wrong stage and no component. These checks
name the component, the method and what it should have returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.contracts import Reconstruction, Update


def kind_of(value: object) -> str:
    return "None" if value is None else type(value).__name__


def checked_reconstructions(attack: Any, recons: object, count: int,
                            method: str = "reconstruct_trials") -> list[Reconstruction]:
    """``recons`` when it is ``count`` :class:`Reconstruction` objects holding a tensor."""
    name = getattr(attack, "registry_name", type(attack).__name__)
    if not isinstance(recons, Sequence) or len(recons) != count:
        raise TypeError(f"attack {name}: {method} returned {kind_of(recons)}"
                        f"{f' of {len(recons)}' if isinstance(recons, Sequence) else ''}, "
                        f"expected a list of {count} Reconstruction, one per observation")
    for recon in recons:
        if not isinstance(recon, Reconstruction):
            one = "reconstruct" if method == "reconstruct" else f"{method}'s item"
            raise TypeError(f"attack {name}: {one} returned {kind_of(recon)}, expected a "
                            "Reconstruction")
        if not isinstance(recon.data, torch.Tensor):
            raise TypeError(f"attack {name}: its Reconstruction.data is "
                            f"{kind_of(recon.data)}, expected a tensor")
    return list(recons)


def checked_batch(defense: Any, out: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A link's ``transform_batch`` result when it is a tuple ``(x, y)`` of tensors."""
    if not (isinstance(out, tuple) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        name = getattr(defense, "registry_name", type(defense).__name__)
        raise TypeError(f"defense {name}: transform_batch returned {kind_of(out)}, expected a "
                        "tuple (x, y) of tensors")
    return out  # type: ignore[return-value]


def check_update(defense: Any, before: Update, after: object) -> None:
    """A link's update is an :class:`Update` of the same parameters."""
    name = getattr(defense, "registry_name", type(defense).__name__)
    if not isinstance(after, Update):
        raise TypeError(f"defense {name}: transform_update returned {kind_of(after)}, "
                        "expected an Update")
    if len(after.tensors) != len(before.tensors) or not all(
            isinstance(t, torch.Tensor) for t in after.tensors):
        raise ValueError(f"defense {name}: transform_update returned {len(after.tensors)} "
                         f"tensors for the model's {len(before.tensors)} parameters (one "
                         "tensor per parameter, in order)")
