"""Values as a record's JSON holds them: what :func:`jsonable` converts (tensors, numpy
values, non-finite floats) and what :func:`unwritable` refuses (objects JSON has no form
for, non-finite floats, non-string keys, lone surrogates UTF-8 cannot encode)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n"


def jsonable(d: Any) -> Any:
    """``d`` (a dict, a list, a value) as JSON can hold it: tensors and numpy arrays as
    lists, numpy scalars as numbers, non-finite floats (a diverged restart's loss) as None,
    at any depth. Anything else stays as it is (:func:`unwritable` names it)."""
    return _json_value(d)


def _json_value(v: Any) -> Any:
    if isinstance(v, (torch.Tensor, np.ndarray, np.generic)):
        v = v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):  # keys as JSON writes them: 0 → "0"
        return {k if isinstance(k, str) else json.dumps(_json_value(k)).strip('"'):
                _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def unwritable(value: Any, where: str = "record") -> str | None:
    """Where ``value`` holds what :func:`dumps` cannot write (an object JSON has no form for,
    a non-finite float, a non-string key, a lone surrogate), as one line; None when it can be
    written.
    ``where`` names ``value`` in that line (empty: paths start at its keys)."""
    if isinstance(value, str):  # a lone surrogate UTF-8 cannot write (undecodable bytes can)
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return f"{where} holds a lone surrogate, which UTF-8 cannot write"
        return None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is not a finite number (NaN or infinity)"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where or 'the record'} has the key {k!r}, not a string"
            problem = (unwritable(k, f"{where or 'the record'}'s key {ascii(k)}")
                       or unwritable(v, f"{where}.{k}" if where else k))
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        return next((p for i, v in enumerate(value) if (p := unwritable(v, f"{where}[{i}]"))),
                    None)
    return f"{where} is of type {type(value).__name__}, which JSON cannot hold"
