"""What a component's method returned, checked where it returns.

A plug-in attack that returns ``None``, or a defense that drops a tensor, had surfaced stages
later as ``score: AttributeError: 'NoneType' object has no attribute 'info'`` or ``attack:
IndexError``: the cell's error record named the wrong stage and no component. These checks
name the component, the method and what it should have returned.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from bench.contracts import DatasetMeta, Reconstruction, Update


def kind_of(value: object) -> str:
    return "None" if value is None else type(value).__name__


def name_of(component: object) -> str:
    """A component's registered name (its class name where it was never registered)."""
    return getattr(component, "registry_name", type(component).__name__)


def checked_reconstructions(attack: Any, recons: object, observations: Sequence[Any],
                            method: str = "reconstruct_trials") -> list[Reconstruction]:
    """``recons`` when it is one :class:`Reconstruction` per observation, each holding a tensor
    of the observed batch's shape (floating-point for pixels: a grey image for a colour batch
    had been broadcast to three channels, integer data read as pixels; integer ids of the
    vocabulary for tokens, unless it diverged) and, where it inferred labels, class indices of
    the observation's classes."""
    name = name_of(attack)
    count = len(observations)
    if not isinstance(recons, Sequence) or len(recons) != count:
        raise TypeError(f"attack {name}: {method} returned {kind_of(recons)}"
                        f"{f' of {len(recons)}' if isinstance(recons, Sequence) else ''}, "
                        f"expected a list of {count} Reconstruction, one per observation")
    for recon, obs in zip(recons, observations):
        if not isinstance(recon, Reconstruction):
            one = "reconstruct" if method == "reconstruct" else f"{method}'s item"
            raise TypeError(f"attack {name}: {one} returned {kind_of(recon)}, expected a "
                            "Reconstruction")
        diverged = isinstance(recon.info, dict) and bool(recon.info.get("diverged"))
        _check_data(name, recon.data, obs, diverged)
        _check_budget(attack, name, recon, obs)
        if recon.labels is not None:
            _check_labels(name, recon.labels, obs)
    return list(recons)


def _check_data(name: str, data: object, obs: Any, diverged: bool) -> None:
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"attack {name}: its Reconstruction.data is {kind_of(data)}, "
                        "expected a tensor")
    if data.device.type == "meta":  # the scorer copies it to the CPU: a meta tensor has no data
        raise ValueError(f"attack {name}: its Reconstruction.data is on the meta device, "
                         "expected a tensor holding values")
    expected = (obs.batch_size, *obs.domain.shape)
    if tuple(data.shape) != expected:
        raise ValueError(f"attack {name}: its Reconstruction.data has shape "
                         f"{tuple(data.shape)}, expected {expected} (the observed batch of "
                         f"{obs.batch_size}, each of shape {tuple(obs.domain.shape)})")
    if obs.domain.kind == "pixels" and not data.is_floating_point():
        raise TypeError(f"attack {name}: its Reconstruction.data is {data.dtype}, expected a "
                        "floating-point tensor in model-input space")
    if obs.domain.kind == "tokens" and not diverged:  # decoding truncated 3.7, clamped 5000
        vocab = obs.domain.vocab_size
        if not _integer(data):
            raise TypeError(f"attack {name}: its Reconstruction.data is {data.dtype}, "
                            "expected token ids (an integer tensor)")
        outside = _outside(data, vocab)
        if outside:
            raise ValueError(f"attack {name}: its Reconstruction.data holds token id(s) "
                             f"{outside}, outside the vocabulary 0…{vocab - 1}")


def _check_budget(attack: Any, name: str, recon: Reconstruction, obs: Any) -> None:
    """The counts a Reconstruction reports are within the suite's caps: a plug-in's 10**6
    evaluations under ``max_grad_evals: 10`` had been ranked as they stood (a count's type is
    the record's check)."""
    caps = [("grad_evals", getattr(obs, "max_grad_evals", None))]
    if getattr(attack, "counts_iterations", True):
        caps.append(("iterations", getattr(obs, "max_iterations", None)))
    for field, cap in caps:
        count = getattr(recon, field)
        if cap is not None and isinstance(count, numbers.Real) and count > cap:
            raise ValueError(f"attack {name}: it reported {count} {field}, over the suite's "
                             f"max_{field} of {cap}")


def _check_labels(name: str, labels: object, obs: Any) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"attack {name}: its Reconstruction.labels is {kind_of(labels)}, "
                        "expected a tensor of class indices or None")
    if not _integer(labels):
        raise TypeError(f"attack {name}: its Reconstruction.labels is {labels.dtype}, "
                        "expected integer class indices (not scores or one-hot rows)")
    per_position = obs.domain.kind == "tokens" and getattr(obs.domain, "task", "") == "lm"
    if labels.dim() != 1 and not per_position:  # an integer one-hot row passed the above
        raise ValueError(f"attack {name}: its Reconstruction.labels has shape "
                         f"{tuple(labels.shape)}, expected one class index per sample (a "
                         "1-D tensor, not one-hot rows)")
    outside = _outside(labels, obs.num_classes)
    if outside:
        raise ValueError(f"attack {name}: its Reconstruction.labels holds {outside}, outside "
                         f"the classes 0…{obs.num_classes - 1}")


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _outside(values: torch.Tensor, bound: int) -> str:
    """The distinct values outside 0…bound − 1, the first five written out ('' for none);
    compared as int64 (in int8, 1 000 wraps round and good values looked outside)."""
    wide = values.long()
    outside = wide[(wide < 0) | (wide >= bound)].unique().tolist()
    return ", ".join(map(str, outside[:5])) + (", …" if len(outside) > 5 else "")


def checked_model(arch: Any, model: object) -> torch.nn.Module:
    """An architecture's ``build`` result when it is a module with a trainable parameter,
    all of its parameters float32 (the harness's inputs and updates are)."""
    name = name_of(arch)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"arch {name}: build returned {kind_of(model)}, expected a "
                        "torch.nn.Module")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"arch {name}: build returned a model with no trainable parameter "
                         "(its clients would share an empty update)")
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                     if p.dtype != torch.float32})
    if dtypes:
        raise TypeError(f"arch {name}: build returned a model with {', '.join(dtypes)} "
                        "parameters, expected float32 (the data and updates are float32)")
    return model


def output_problem(out: object, meta: DatasetMeta, batch: int) -> str | None:
    """What is wrong with a model's output on a batch of ``batch`` items of ``meta``'s data,
    or None: logits, floating-point, one row of ``num_classes`` per item (a single logit
    where the model is trained with the logistic loss), per position for a language model,
    and depending on the parameters (a detached output has no gradient to share)."""
    if not isinstance(out, torch.Tensor):
        return f"its model returned {kind_of(out)}, expected a tensor of logits"
    if not out.is_floating_point():
        return f"its model returned {str(out.dtype).removeprefix('torch.')} logits, expected " \
            "floating-point ones"
    if meta.modality == "text" and meta.task == "lm":
        shapes = [(batch, *meta.shape, meta.num_classes)]
    else:
        shapes = [(batch, meta.num_classes), (batch, 1)]
    if tuple(out.shape) not in shapes:
        return (f"its model returned logits of shape {tuple(out.shape)} for {batch} items, "
                f"expected {' or '.join(map(str, shapes))} (the dataset has "
                f"{meta.num_classes} classes)")
    if not out.requires_grad:
        return "its model's output does not depend on its parameters (detached): a client " \
            "would share no gradient"
    return None


def meta_device_probe(arch: Any, meta: DatasetMeta) -> tuple[str | None, str | None]:
    """(Why no model of ``arch`` builds for ``meta``'s data: ``build_for``'s ValueError, an
    input smaller than the ConvNet's pools, say; what is wrong with the logits of the model
    it builds on a batch of two: :func:`output_problem`), each None where nothing is found.

    Both run on the meta device: nothing allocated, no random draw. A build or forward that
    fails otherwise (an op without a meta kernel, a plug-in's bug) is left to the real one."""
    try:
        with torch.device("meta"):
            model = arch.build_for(meta)
    except ValueError as e:
        return str(e), None
    except Exception:  # noqa: BLE001 - reported by the cell's own build
        return None, None
    if not isinstance(model, torch.nn.Module) or not any(p.requires_grad
                                                         for p in model.parameters()):
        return None, None  # the real build's check names it (checked_model)
    try:
        with torch.device("meta"):
            out = model(torch.zeros((2, *meta.shape), dtype=torch.long
                                    if meta.modality == "text" else torch.float32))
    except Exception:  # noqa: BLE001 - as above
        return None, None
    return None, output_problem(out, meta, 2)


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    """A finite real number, of any kind ``float`` reads (numpy's, a one-element tensor)."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        return False


def meta_problem(meta: object) -> str | None:
    """What is wrong with a dataset's ``meta()``, or None: a :class:`DatasetMeta` of at least
    one class and, for images, a (channels, height, width) shape with one finite mean and one
    finite positive std per channel."""
    if not isinstance(meta, DatasetMeta):
        return f"meta() returned {kind_of(meta)}, expected a DatasetMeta"
    classes = meta.num_classes
    if not _whole(classes) or classes < 1:
        return f"its DatasetMeta has num_classes {classes!r}, expected a whole number ≥ 1"
    if meta.modality not in ("image", "text"):
        return f"its DatasetMeta has modality {meta.modality!r}, expected 'image' or 'text'"
    expected = "(sequence length,)" if meta.modality == "text" else "(channels, height, width)"
    try:
        shape = tuple(meta.shape)
    except TypeError:
        shape = ()
    if len(shape) != (1 if meta.modality == "text" else 3) or not all(
            _whole(n) and n > 0 for n in shape):
        return f"its DatasetMeta has shape {meta.shape!r}, expected {expected}"
    if meta.modality == "text":
        return None
    for what in ("mean", "std"):
        values = getattr(meta, what)
        if not isinstance(values, (tuple, list)):
            return (f"its DatasetMeta's {what} is {kind_of(values)}, expected a tuple of one "
                    "value per channel")
        if len(values) != shape[0]:
            return (f"its DatasetMeta's {what} has {len(values)} value(s) for {shape[0]} "
                    "channel(s), expected one per channel")
    if not all(_finite(m) for m in meta.mean) or not all(
            _finite(s) and float(s) > 0 for s in meta.std):
        return (f"its DatasetMeta has mean {tuple(meta.mean)} and std {tuple(meta.std)}, "
                "expected finite values and a std above 0")
    return None


def checked_batch(defense: Any, out: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A link's ``transform_batch`` result when it is a tuple ``(x, y)`` of tensors, its x of
    the shape of the batch it was given (``x``) and one label (index or row) per item: another
    shape had surfaced later as the model's or the loss's shape error, naming no defense."""
    name = name_of(defense)
    if not (isinstance(out, tuple) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"defense {name}: transform_batch returned {kind_of(out)}, expected a "
                        "tuple (x, y) of tensors")
    new_x, new_y = out
    if new_x.shape != x.shape or new_y.dim() == 0 or len(new_y) != len(x):
        raise ValueError(f"defense {name}: transform_batch returned x of shape "
                         f"{tuple(new_x.shape)} and y of shape {tuple(new_y.shape)}, expected x "
                         f"of shape {tuple(x.shape)}, as given, and one label per item")
    return new_x, new_y


def check_update(defense: Any, before: Update, after: object) -> None:
    """A link's update is an :class:`Update` of the same parameters: one floating-point tensor
    of each parameter's shape, in order."""
    name = name_of(defense)
    if not isinstance(after, Update):
        raise TypeError(f"defense {name}: transform_update returned {kind_of(after)}, "
                        "expected an Update")
    if len(after.tensors) != len(before.tensors) or not all(
            isinstance(t, torch.Tensor) for t in after.tensors):
        raise ValueError(f"defense {name}: transform_update returned {len(after.tensors)} "
                         f"tensors for the model's {len(before.tensors)} parameters (one "
                         "tensor per parameter, in order)")
    for i, (b, a) in enumerate(zip(before.tensors, after.tensors)):
        if a.shape != b.shape or not a.is_floating_point():
            what = f"shape {tuple(a.shape)}" if a.shape != b.shape else f"a {a.dtype} tensor"
            raise ValueError(f"defense {name}: transform_update returned {what} for parameter "
                             f"{i}, expected a floating-point tensor of shape {tuple(b.shape)} (an "
                             "attack would have matched the wrong coordinates)")
