"""Built-in datasets: `digits` (scikit-learn's bundled 8x8 digits) and `synthetic` (seeded shapes)."""

from xaibench.datasets import digits, image_folder, low_snr, mnist, suppressor, synthetic, torchvision_data  # noqa: F401  (import registers the plugins)
from xaibench.datasets import bam_folder, bam_synth  # noqa: F401,E402  (BAM study)
