"""No defense: the client shares its update as computed."""

from bench.contracts import Defense
from bench.registry import register_defense


@register_defense("none")
class NoDefense(Defense):
    """Share the update unchanged (the undefended baseline)."""

    level = "none"
