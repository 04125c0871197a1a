"""Helpers shared by in-memory datasets: batching in a fixed order, split-name checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from xaibench.api import Batch
from xaibench.errors import UserError

SPLITS = ("train", "test")


def check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise UserError(f"dataset {name!r} has no split {split!r}; use one of {', '.join(SPLITS)}")


def iterate(
    ids: list[str],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    limit: int | None,
    masks: torch.Tensor | None = None,
) -> Iterator[Batch]:
    n = len(ids) if limit is None else min(limit, len(ids))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield Batch(
            ids=ids[start:stop],
            inputs=inputs[start:stop],
            labels=labels[start:stop],
            masks=None if masks is None else masks[start:stop],
        )
