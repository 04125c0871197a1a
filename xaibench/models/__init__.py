"""Built-in models; importing a module registers its plugins.

Trainable small CNNs (digits_cnn, synthetic_cnn, small_cnn, mnist_cnn, bam_obj, bam_scene, the
ground-truth models), torchvision architectures and your own modules with local weights, and
the ROAR leakage diagnostic's mask classifier.
"""

from xaibench.models import (  # noqa: F401
    bam,
    cnn,
    ground_truth,
    mask_classifier,
    mnist,
    small_cnn,
    torchvision_models,
)
