"""Deletion (MoRF pixel flipping) against Quantus 0.6 ``PixelFlipping``, measured in the same run.

Same fitted model, inputs and maps for both, one intra-op thread, at 8x8 (``digits_cnn`` on
``digits``), 32x32 and 64x64 (``synthetic_cnn`` on ``synthetic`` of that size; 1 channel). The
models are xaibench's own fits (``xaibench/fitting.py``), trained into the user cache on first use
(about 2 minutes for the 64x64 one, once).

Settings under which the two compute the same numbers:

* order: Quantus ranks ``np.argsort(-a)``; xaibench ``order: morf`` ranks by ``reduce: abs_sum``
  (one channel: |a|), so Quantus gets ``abs=True``. Maps are saliency plus a tiny seeded jitter
  (no exact ties, so neither tie-break matters), divided by their global max |value| beforehand,
  so Quantus' default ``normalise_by_max`` divides by exactly 1 and cannot create ties.
* baseline: ``perturb_baseline=0.0`` is xaibench's ``fill: black`` (Quantus' ``"black"`` would be
  each image's minimum).
* steps: ``features_in_step = H * W / steps``, so Quantus' k-th point (k = 1..steps) flips the
  same pixels as xaibench's point at fraction k / steps. Quantus has no point at fraction 0; the
  curves are compared on points 1..steps, and the AUCs by rebuilding xaibench's (trapezoid over
  fractions 0..1) from Quantus' curve plus the unperturbed probability.
* probability: softmax of the target class in both (Quantus ``softmax=True``); both use
  ``batch_size`` items per call (``--batch``, the runner's default 64).
* the unperturbed input: both get what a run has before it scores, the targets (Quantus) and the
  logits that chose them (xaibench, ``Batch.extras[LOGITS]``, as the runner passes them), so
  neither sends the unchanged items through the model again.

Timed alternately over ``--rounds`` rounds (medians): Quantus' ``PixelFlipping`` call on all
items, xaibench's ``Deletion.score`` over the same items in batches, and the bare forward passes
xaibench's call makes (the same numbers of images per pass, recorded by a hook, timed alone):
through the model as it is (``metric/fwd``, the ratio the issue asks for) and through a copy with
channels-last weights, the layout xaibench runs a model in on a CPU (``metric/fwd(cl)``: what the
curve machinery adds to its own passes). Quantus is a benchmark dependency only
(``pip install .[bench]``).

    .venv/bin/python benchmarks/quantus_pixel_flipping.py [--items 128] [--rounds 5] [--steps 16]
        [--clock wall|process]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xaibench.api import LOGITS, Batch  # noqa: E402
from xaibench.cache import Cache  # noqa: E402
from xaibench.fitting import FitSpec, FittedModels  # noqa: E402
from xaibench.imaging import importance_map, rank_pixels  # noqa: E402
from xaibench.manifest import PluginSpec  # noqa: E402
from xaibench.metrics.perturbation import Deletion, switch_curve  # noqa: E402
from xaibench.registry import build  # noqa: E402
from xaibench.seeding import item_seeds  # noqa: E402

MODELS = {8: ("digits_cnn", {}), 32: ("synthetic_cnn", {}), 64: ("synthetic_cnn", {"size": 64})}


def setup(side: int, items: int):
    """The fitted model for ``side``, its first test items, predicted targets and jittered saliency maps."""
    name, params = MODELS[side]
    spec = FitSpec(PluginSpec("model", name, json.dumps(params), "benchmark"))
    model = FittedModels(Cache(), torch.device("cpu")).get(spec)
    batch = next(spec.instance().train_data().batches("test", items))
    with torch.no_grad():
        logits = model(batch.inputs)
    target = logits.argmax(1)
    # As the runner scores a batch: with the logits that chose the target, from which xaibench
    # reads the unperturbed point of the curve (Quantus gets the targets from the same pass).
    batch = Batch(batch.ids, batch.inputs, batch.labels, batch.masks, {**batch.extras, LOGITS: logits})
    maps = build("method", "saliency").attribute(model, batch.inputs, target, item_seeds(0, batch.ids, "method"))
    jitter = torch.randn(maps.shape, generator=torch.Generator().manual_seed(side))
    maps = maps + 1e-4 * maps.abs().mean() * jitter
    return model, batch, target, maps / maps.abs().max()


def xaibench_deletion(model, batch, target, maps, steps: int, size: int) -> np.ndarray:
    """``Deletion.score`` as the runner calls it: one call per batch of ``size`` items."""
    metric = Deletion(steps=steps, fill="black", reduce="abs_sum", order="morf")
    seeds = item_seeds(0, batch.ids, "metric:deletion")
    aucs = []
    for start in range(0, len(batch), size):
        part = slice(start, start + size)
        window = batch.select(list(range(len(batch)))[part])
        aucs.append(metric.score(model, window, target[part], maps[part], None, seeds[part])["auc"])
    return torch.cat(aucs).numpy()


def xaibench_curves(model, batch, target, maps, steps: int, size: int) -> np.ndarray:
    """The curves ``Deletion.score`` integrates (its own ranking and ``switch_curve``), points 0..steps."""
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    seeds = item_seeds(0, batch.ids, "metric:deletion")
    order = rank_pixels(importance_map(maps, "abs_sum"), seeds)
    inputs = batch.inputs
    return torch.cat(
        [
            switch_curve(model, x, torch.zeros_like(x), o, t, fractions)
            for x, o, t in zip(inputs.split(size), order.split(size), target.split(size), strict=True)
        ]
    ).numpy()


def quantus_pixel_flipping(model, batch, target, maps, steps: int, size: int) -> np.ndarray:
    """Quantus' per-item curves (points 1..steps) under the settings that match xaibench's."""
    import quantus

    side = batch.inputs.shape[-1]
    metric = quantus.PixelFlipping(
        features_in_step=side * side // steps, abs=True, perturb_baseline=0.0, disable_warnings=True
    )
    curves = metric(
        model,
        batch.inputs.numpy(),
        target.numpy(),
        maps.numpy(),
        channel_first=True,
        softmax=True,
        device="cpu",
        batch_size=size,
    )
    return np.asarray(curves)


def pass_sizes(model, call) -> list[torch.Size]:
    """The input shape of every forward pass ``call()`` makes through ``model``."""
    shapes = []
    handle = model.register_forward_pre_hook(lambda module, args: shapes.append(args[0].shape))
    try:
        call()
    finally:
        handle.remove()
    return shapes


def bare_forwards(model, shapes: list[torch.Size], channels_last: bool = False):
    """A call that sends random images of those shapes through the model, nothing else.

    ``channels_last``: through a copy of the model with its weights in that layout, as
    xaibench's deletion runs it on a CPU (same values up to float rounding, faster oneDNN kernels).
    """
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    biggest = max(shapes, key=lambda s: s.numel())
    images = torch.rand(biggest, generator=torch.Generator().manual_seed(0))

    def run():
        with torch.inference_mode():
            for shape in shapes:
                model(images[: shape[0]])

    return run


def measure(side: int, options) -> dict:
    model, batch, target, maps = setup(side, options.items)
    steps, size = options.steps, options.batch
    if (side * side) % steps:
        raise SystemExit(f"--steps {steps} must divide {side}x{side} pixels")
    ours = xaibench_deletion(model, batch, target, maps, steps, size)
    theirs = quantus_pixel_flipping(model, batch, target, maps, steps, size)
    curves = xaibench_curves(model, batch, target, maps, steps, size)
    with torch.no_grad():
        start = model(batch.inputs).softmax(-1).gather(1, target.view(-1, 1)).numpy()
    rebuilt = np.trapezoid(np.concatenate([start, theirs], axis=1), np.linspace(0, 1, steps + 1), axis=1)
    shapes = pass_sizes(model, lambda: xaibench_deletion(model, batch, target, maps, steps, size))

    calls = {
        "quantus": lambda: quantus_pixel_flipping(model, batch, target, maps, steps, size),
        "xaibench": lambda: xaibench_deletion(model, batch, target, maps, steps, size),
        "forward": bare_forwards(model, shapes),
        "forward_cl": bare_forwards(model, shapes, channels_last=True),
    }
    clock = time.process_time if options.clock == "process" else time.perf_counter
    timings = {name: [] for name in calls}
    for _ in range(options.rounds):  # alternate: this machine's speed drifts between seconds
        for name, call in calls.items():
            began = clock()
            call()
            timings[name].append(clock() - began)
    medians = {name: float(np.median(times)) for name, times in timings.items()}
    return {
        "side": side,
        "passes": len(shapes),
        "model": MODELS[side][0],
        **medians,
        "curve_error": float(np.abs(curves[:, 1:] - theirs).max()),
        "auc_error": float(np.abs(ours - rebuilt).max()),
        "spread": float(curves.max() - curves.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds; medians are reported")
    parser.add_argument("--steps", type=int, default=16, help="points per curve after 0; must divide H*W")
    parser.add_argument("--batch", type=int, default=64, help="items per metric call, both libraries")
    parser.add_argument("--sizes", default="8,32,64")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="process: this process's CPU time, less disturbed by other jobs on a shared machine",
    )
    options = parser.parse_args()
    torch.set_num_threads(1)
    # Quantus warns when a step leaves an image unchanged (pixels that were already black).
    warnings.filterwarnings("ignore", message="The settings for perturbing input", category=UserWarning)

    import quantus

    from xaibench.metrics import perturbation

    print(
        f"deletion (MoRF, black) vs quantus {quantus.__version__} PixelFlipping: {options.items} items, "
        f"{options.steps} steps, {options.batch} items per call, 1 thread, median of {options.rounds} rounds "
        f"({options.clock} clock), PASS_ELEMENTS[cpu] = {perturbation.PASS_ELEMENTS['cpu']}"
    )
    print(
        "  size  model          passes  quantus s  xaibench s  speed-up  forward s  metric/fwd  "
        "metric/fwd(cl)  max|curve d|  max|AUC d|"
    )
    failed = False
    for side in map(int, options.sizes.split(",")):
        r = measure(side, options)
        print(
            f"  {side:2d}x{side:<2d} {r['model']:14s} {r['passes']:6d} {r['quantus']:10.3f} {r['xaibench']:11.3f} "
            f"{r['quantus'] / r['xaibench']:8.2f}x {r['forward']:10.3f} {r['xaibench'] / r['forward']:11.2f} "
            f"{r['xaibench'] / r['forward_cl']:15.2f} {r['curve_error']:13.1e} {r['auc_error']:11.1e}",
            flush=True,
        )
        failed |= max(r["curve_error"], r["auc_error"]) > 1e-5 or r["spread"] < 0.1
    if failed:
        raise SystemExit("values differ by more than 1e-5 (or the curves are too flat to show it)")


if __name__ == "__main__":
    main()
