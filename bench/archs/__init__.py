"""Victim architectures, one per file, registered with ``@register_arch``."""
