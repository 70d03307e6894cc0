"""Samplers of a score model's distribution, one per file, registered with ``@register_sampler``."""
