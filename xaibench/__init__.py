"""xaibench: a command-line benchmarking suite for attribution (saliency) faithfulness."""

__version__ = "0.1.0"
