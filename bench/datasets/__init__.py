"""Datasets, one per file, registered with ``@register_dataset``."""
