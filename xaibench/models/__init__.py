"""Built-in models: small CNNs that train on first use and are cached (`digits_cnn`, `synthetic_cnn`)."""

from xaibench.models import cnn, ground_truth, mnist, torchvision_models  # noqa: F401  (import registers the plugins)
from xaibench.models import mask_classifier, small_cnn  # noqa: F401,E402  (ROAR study models)
from xaibench.models import bam  # noqa: F401,E402  (BAM study)
