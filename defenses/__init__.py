"""Defenses, one per file, registered with ``@register_defense``."""
