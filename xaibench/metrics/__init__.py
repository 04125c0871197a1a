"""Built-in metrics: perturbation curves, faithfulness correlation, captum's infidelity and
sensitivity, localisation (more studies plug in beside them). Importing a module registers it."""

from xaibench.metrics import captum_metrics, faithfulness, localisation, perturbation, randomization  # noqa: F401
from xaibench.metrics import roar  # noqa: F401,E402  (ROAR/KAR study)
from xaibench.metrics import bam  # noqa: F401,E402  (BAM study)
