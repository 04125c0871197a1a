"""Built-in attribution methods (wrappers over captum) and the controls random, sobel, blur_random."""

import warnings

# captum warns on every call that it set requires_grad or hooked ReLUs: expected, not news.
warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")

from xaibench.methods import (  # noqa: E402, F401
    cam,
    controls,
    extremal,
    fullgrad,
    gradients,
    noise_tunnel,
    perturbation,
    rise,
    rollout,
    score_cam,
    xrai,
)
