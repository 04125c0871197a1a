"""Built-in metrics: deletion and insertion curves (more studies plug in beside them)."""

from xaibench.metrics import perturbation  # noqa: F401  (import registers the plugins)
