"""tlbench: transfer-learning benchmarks on images."""

__version__ = "0.1.0"
