"""leakbench: a benchmark harness for gradient-leakage attacks and defenses."""

__version__ = "0.1.0"
