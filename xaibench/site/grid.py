"""Saliency grids: for the first N items of each (model, dataset), the input image and every
method's attribution map from the cache, as PNG files beside the page.

Items are the first N of the dataset split's order among the items that have rows. Inputs are
rebuilt from the rows' ``dataset`` + ``dataset_params`` (``registry.build`` and ``batches``);
maps are read with ``Cache.get("attributions", attribution_key, ids)`` (rows carry the key of
the map each score used). A map the cache no longer holds (cleared, or another machine's cache)
is ``None``: the page shows an honest "not cached" cell, never a recomputed map. A dataset that
cannot be rebuilt here (local files missing, a plugin not loaded) gives ``None`` inputs.

Rendering: a map is summed over channels (signed) and drawn with a diverging colormap (red
positive, blue negative, white zero) scaled by its own largest absolute value, so each map
shows where its mass is, not how large it is next to another method's. Images under 64 pixels
a side are enlarged by pixel repetition (the page also asks the browser for pixelated scaling).
Only the original model's maps are shown (not retrained or randomised fits), of the lowest seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.boards.summary import labelled

MIN_SIDE = 64
SCAN_LIMIT = 4096  # items scanned to find the inputs when the dataset cannot list its ids


@dataclass
class GridItem:
    item_id: str
    label: str
    prediction: str
    input_png: str | None = None  # path relative to the page; None: the input cannot be rebuilt
    maps: dict[str, str | None] = field(default_factory=dict)  # method -> PNG path, None: not cached


@dataclass
class Grid:
    title: str
    methods: list[str]
    items: list[GridItem]
    note: str = ""


def _enlarge(image: np.ndarray) -> np.ndarray:
    side = min(image.shape[:2])
    factor = max(1, -(-MIN_SIDE // side)) if side else 1
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def _save(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_enlarge(image)).save(path, optimize=True)


def input_image(tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> uint8 grey (H, W) or RGB (H, W, 3)."""
    array = np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float32).clip(0, 1)
    array = array[0] if array.shape[0] == 1 else array[:3].transpose(1, 2, 0)
    return (array * 255).round().astype(np.uint8)


def map_image(tensor) -> np.ndarray:
    """(C, H, W) or (H, W) attribution -> RGB uint8: channel sum, symmetric diverging colours."""
    import matplotlib

    array = np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float64)
    if array.ndim == 3:
        array = array.sum(axis=0)
    array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.abs(array).max())
    normalised = 0.5 + 0.5 * array / scale if scale > 0 else np.full_like(array, 0.5)
    colours = matplotlib.colormaps["RdBu_r"](normalised)[..., :3]
    return (colours * 255).round().astype(np.uint8)


def _dataset(name: str, params: str):
    from xaibench import registry

    try:
        registry.load_builtins()
        return registry.build("dataset", name, json.loads(params))
    except Exception:  # noqa: BLE001 - any failure means "inputs unavailable here", never a broken site
        return None


def _ordered(dataset, split: str, ids: set[str]) -> list[str]:
    """The ids in the dataset's order (sorted by id when the dataset cannot list them)."""
    try:
        order = {item: i for i, item in enumerate(dataset.item_ids(split))}
    except Exception:  # noqa: BLE001
        return sorted(ids)
    return sorted(ids, key=lambda item: (order.get(item, len(order)), item))


def _inputs(dataset, split: str, wanted: list[str]) -> dict:
    found: dict = {}
    if dataset is None:
        return found
    try:
        order = {item: i for i, item in enumerate(dataset.item_ids(split))}
        positions = [order[i] for i in wanted if i in order]
        start, stop = (min(positions), max(positions) + 1) if positions else (0, SCAN_LIMIT)
    except Exception:  # noqa: BLE001
        start, stop = 0, SCAN_LIMIT
    try:
        for batch in dataset.batches(split, batch_size=64, limit=stop, start=start):
            for position, item in enumerate(batch.ids):
                if item in wanted:
                    found[item] = batch.inputs[position]
            if len(found) == len(wanted):
                break
    except Exception:  # noqa: BLE001
        pass
    return found


def _text(value) -> str:
    return "–" if pd.isna(value) else str(int(value))


def grids(rows: pd.DataFrame, cache, folder: Path, prefix: str, n_items: int = 8) -> list[Grid]:
    """Write the grids' PNGs under ``folder / prefix`` and return what the page shows."""
    needed = {"attribution_key", "item_id", "dataset_params", "model", "dataset", "method"}
    if rows.empty or not needed <= set(rows.columns):
        return []
    rows = rows[rows["attribution_key"].notna()]
    if "model_role" in rows:
        rows = rows[rows["model_role"].isna() | (rows["model_role"] == "original")]
    if rows.empty:
        return []
    rows = labelled(rows.assign(dataset_name=rows["dataset"]))
    out = []
    cell = ["model", "dataset", "split", "target_mode"]
    for number, (key, group) in enumerate(rows.groupby(cell, sort=True, dropna=False)):
        if "seed" in group and group["seed"].notna().any():
            group = group[group["seed"] == group["seed"].min()]
        keys = group.drop_duplicates("method").set_index("method")["attribution_key"]
        methods = sorted(keys.index)
        first = group.iloc[0]
        dataset = _dataset(first["dataset_name"], first["dataset_params"])
        ordered = _ordered(dataset, key[2], set(group["item_id"])) if dataset is not None else sorted(group["item_id"])
        chosen = ordered[:n_items]
        meta = group.drop_duplicates("item_id").set_index("item_id")
        inputs = _inputs(dataset, key[2], chosen)
        maps = {method: cache.get("attributions", keys[method], chosen) for method in methods}
        items = []
        for index, item in enumerate(chosen):
            entry = GridItem(item, _text(meta.at[item, "label"]), _text(meta.at[item, "prediction"]))
            if item in inputs:
                name = f"{prefix}/{number}-{index}-input.png"
                _save(folder / name, input_image(inputs[item]))
                entry.input_png = name
            for m, method in enumerate(methods):
                tensor = maps[method].get(item)
                if tensor is None:
                    entry.maps[method] = None
                    continue
                name = f"{prefix}/{number}-{index}-m{m}.png"
                _save(folder / name, map_image(tensor))
                entry.maps[method] = name
            items.append(entry)
        seed = f", seed {int(group['seed'].iloc[0])}" if "seed" in group and group["seed"].notna().any() else ""
        title = f"{key[0]} × {key[1]} · split {key[2]}, target {key[3]}{seed}"
        note = "" if dataset is not None else "inputs unavailable: the dataset cannot be rebuilt here"
        out.append(Grid(title, methods, items, note))
    return out
