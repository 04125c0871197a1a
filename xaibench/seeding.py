"""Per-item seeds: every random choice is seeded from (run seed, item id, purpose).

So one item's value does not depend on batch size, order or device (PROTOCOLS.md).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def item_seed(seed: int, item_id: str, purpose: str = "") -> int:
    """A 63-bit seed from the run seed, the item id and what the randomness is for."""
    digest = hashlib.blake2b(f"{seed}\x1f{item_id}\x1f{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def item_seeds(seed: int, ids: list[str], purpose: str = "") -> torch.Tensor:
    import torch

    return torch.tensor([item_seed(seed, i, purpose) for i in ids], dtype=torch.int64)


def generator(seed: int | torch.Tensor, salt: int = 0) -> torch.Generator:
    """A CPU generator for one item (random tensors are drawn on the CPU, then moved)."""
    import torch

    g = torch.Generator()
    g.manual_seed((int(seed) + salt * 0x9E3779B97F4A7C15) & ((1 << 63) - 1))
    return g


def per_item(seeds: torch.Tensor, draw, salt: int = 0) -> torch.Tensor:
    """Stack ``draw(generator)`` over items, one generator per item seed."""
    import torch

    return torch.stack([draw(generator(s, salt)) for s in seeds.tolist()])
