"""A plain supervised training loop and an accuracy check, shared by the trainable models."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

from xaibench.api import Dataset


def load_split(dataset: Dataset, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    batches = list(dataset.batches(split, batch_size=1024, limit=limit))
    return torch.cat([b.inputs for b in batches]), torch.cat([b.labels for b in batches])


def train_classifier(
    module: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> nn.Module:
    """Adam + cross-entropy with a one-cycle schedule and seeded shuffling; returns it in eval mode."""
    import torch
    import torch.nn.functional as F

    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    steps_per_epoch = (len(labels) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=order_generator)
        for start in range(0, len(labels), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(inputs[index]), labels[index])
            loss.backward()
            optimizer.step()
            schedule.step()
    return module.eval()


def accuracy(module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    import torch

    with torch.no_grad():
        predictions = torch.cat([module(chunk).argmax(1) for chunk in inputs.split(512)])
    return (predictions == labels).float().mean().item()
