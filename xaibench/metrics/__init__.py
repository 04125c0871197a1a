"""Built-in metrics; importing a module registers its plugins.

Perturbation (deletion, insertion, ROAD, faithfulness correlation, infidelity, max-sensitivity,
PIC), localisation, remove-and-retrain (ROAR/KAR), BAM, and the randomization sanity checks.
"""

from xaibench.metrics import (  # noqa: F401
    bam,
    captum_metrics,
    faithfulness,
    localisation,
    perturbation,
    pic,
    randomization,
    road,
    roar,
)
