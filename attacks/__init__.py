"""Gradient-leakage attacks, one per file, registered with ``@register_attack``.

Shared pieces sit beside them: ``labels`` (label inference), ``gradient_matching``
(gradient-matching objectives and the optimiser loop), ``priors``.
"""
