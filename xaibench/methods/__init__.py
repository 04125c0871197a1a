"""Built-in attribution methods (wrappers over captum) and the controls random, sobel, blur_random."""

import warnings

# captum warns on every call that it set requires_grad or hooked ReLUs: expected, not news.
warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")

from xaibench.methods import cam, controls, gradients, noise_tunnel, perturbation, rollout  # noqa: E402, F401
