"""tlbench: transfer-learning benchmarks on images."""

from tlbench import resolvers as _resolvers

__version__ = "0.1.0"

_resolvers.register()
