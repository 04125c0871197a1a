"""Attributions per second on real architectures: resnet18 and vit_b_16 (random init, 224x224).

For each model and main method (saliency, integrated_gradients, grad_cam, smoothgrad, and
attention_rollout for the ViT) it reports items per second, the peak memory above the model's
own (CUDA: ``max_memory_allocated``; CPU: peak resident set size sampled every 5 ms), and the
batch size chosen automatically: it starts at ``--max-batch`` (capped by ``--items``) and halves
on out-of-memory until a batch fits. Run: ``python benchmarks/real_models.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings

import torch

from xaibench import registry
from xaibench.models.torchvision_models import TorchvisionModel
from xaibench.seeding import item_seeds

warnings.filterwarnings("ignore")
METHODS = {
    "resnet18": ["saliency", "integrated_gradients", "grad_cam", "smoothgrad"],
    "vit_b_16": ["saliency", "integrated_gradients", "grad_cam", "smoothgrad", "attention_rollout"],
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator statistics, or sampled CPU RSS."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes() - self.base)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self.thread.join()


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error).lower()


def measure(model, method, inputs, device, max_batch: int) -> dict:
    """Run ``method`` over ``inputs`` at the largest batch size that fits (halving from max_batch)."""
    target = torch.zeros(len(inputs), dtype=torch.long, device=device)
    seeds = item_seeds(0, [str(i) for i in range(len(inputs))])
    batch = min(max_batch, len(inputs))
    while True:
        try:
            method.attribute(model, inputs[:1], target[:1], seeds[:1])  # warm-up (layer search, kernels)
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                for first in range(0, len(inputs), batch):
                    part = slice(first, first + batch)
                    method.attribute(model, inputs[part], target[part], seeds[part])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            return {"batch": batch, "per_s": len(inputs) / elapsed, "peak_mb": memory.peak / 2**20}
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not is_oom(error) or batch == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--items", type=int, default=4, help="items per (model, method)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--models", nargs="*", default=list(METHODS))
    parser.add_argument(
        "--methods",
        nargs="*",
        help="only these (a CPU peak is only honest for the first method "
        "of a process: freed memory stays in the process)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} items={args.items} torch={torch.__version__}")
    print(f"{'model':<10} {'method':<22} {'batch':>5} {'items/s':>9} {'peak MB':>9}")
    for arch in args.models:
        model = TorchvisionModel(arch=arch, weights="none").build().to(device)
        inputs = torch.rand(args.items, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
        for name in [m for m in METHODS[arch] if not args.methods or m in args.methods]:
            row = measure(model, registry.build("method", name), inputs, device, args.max_batch)
            print(f"{arch:<10} {name:<22} {row['batch']:>5} {row['per_s']:>9.2f} {row['peak_mb']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
