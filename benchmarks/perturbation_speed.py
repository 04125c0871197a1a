"""Deletion-curve speed: xaibench's batched curve against a per-sample reference loop.

The reference is the loop found in Quantus-style code: for every item and every step, build
one perturbed copy in NumPy, send it through the model alone, read the probability. xaibench
builds all (steps + 1) x batch copies with one `torch.where` and sends them in as few forward
passes as its memory budget allows. Both run here on the same model, inputs and attributions;
the script checks they agree (max |AUC difference|) and prints the speed-up. The comparison with
Quantus itself (its ``PixelFlipping``, same settings, same run) is ``quantus_pixel_flipping.py``.

    .venv/bin/python benchmarks/perturbation_speed.py [--items 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xaibench.cache import Cache
from xaibench.fitting import FitSpec, FittedModels
from xaibench.manifest import PluginSpec
from xaibench.metrics.perturbation import Deletion
from xaibench.registry import build
from xaibench.seeding import item_seeds


def reference_deletion(model, inputs: np.ndarray, attributions: np.ndarray, target: np.ndarray, steps: int):
    """Per-item, per-step deletion AUC with a strict (no-tie) ranking, NumPy round trips."""
    aucs = []
    fractions = np.linspace(0, 1, steps + 1)
    for x, a, t in zip(inputs, attributions, target, strict=True):
        importance = np.abs(a).sum(0).ravel()
        order = np.argsort(-importance, kind="stable")
        curve = []
        for f in fractions:
            perturbed = x.copy().reshape(x.shape[0], -1)
            perturbed[:, order[: int(round(f * importance.size))]] = 0.0
            with torch.no_grad():
                logits = model(torch.from_numpy(perturbed.reshape(1, *x.shape)))
            curve.append(torch.softmax(logits, -1)[0, t].item())
        aucs.append(np.trapezoid(curve, fractions))
    return np.array(aucs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are reported")
    parser.add_argument("--dataset", choices=["digits", "synthetic"], default="synthetic")
    options = parser.parse_args()

    model_name = "digits_cnn" if options.dataset == "digits" else "synthetic_cnn"
    model = FittedModels(Cache(), torch.device("cpu")).get(FitSpec(PluginSpec("model", model_name, "{}", "benchmark")))
    batch = next(build("dataset", options.dataset).batches("test", options.items))
    ids = batch.ids
    with torch.no_grad():
        target = model(batch.inputs).argmax(1)
    # Saliency maps have no exact ties, so the seeded tie-break cannot make the two differ.
    attributions = build("method", "saliency").attribute(model, batch.inputs, target, item_seeds(0, ids, "method"))
    metric = Deletion(steps=options.steps)
    seeds = item_seeds(0, ids, "metric:deletion")

    def batched():
        return torch.cat(
            [
                metric.score(
                    model,
                    batch.select(list(range(s, min(s + 64, len(ids))))),
                    target[s : s + 64],
                    attributions[s : s + 64],
                    None,
                    seeds[s : s + 64],
                )["auc"]
                for s in range(0, len(ids), 64)
            ]
        ).numpy()

    def reference():
        return reference_deletion(model, batch.inputs.numpy(), attributions.numpy(), target.numpy(), options.steps)

    # Alternate the two, several times, and compare medians: this machine's speed drifts.
    batched_times, reference_times = [], []
    for _ in range(options.repeats):
        started = time.perf_counter()
        ours = batched()
        batched_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = reference()
        reference_times.append(time.perf_counter() - started)
    batched_seconds, reference_seconds = float(np.median(batched_times)), float(np.median(reference_times))

    shape = "x".join(map(str, batch.inputs.shape[1:]))
    print(
        f"deletion AUC, {len(ids)} items of {options.dataset} ({shape}), {options.steps + 1} points per curve, "
        f"median of {options.repeats} rounds"
    )
    print(f"  per-sample reference loop : {reference_seconds:8.2f} s  ({len(ids) / reference_seconds:8.1f} items/s)")
    print(f"  xaibench batched          : {batched_seconds:8.2f} s  ({len(ids) / batched_seconds:8.1f} items/s)")
    print(f"  speed-up                  : {reference_seconds / batched_seconds:8.1f}x")
    print(f"  max |AUC difference|      : {np.abs(ours - theirs).max():.2e}")


if __name__ == "__main__":
    main()
