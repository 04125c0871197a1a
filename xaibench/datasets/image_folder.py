"""`image_folder`: images in the standard class-per-folder layout at a local root.

Two layouts: ``root/train/<class>/*.png`` and ``root/test/<class>/...`` (split folders, also
``val``), or ``root/<class>/*.png`` split by a seeded, stratified ratio. Images are decoded with
Pillow, converted to RGB or grey, resized (shorter side) and centre-cropped.

Class index = position of the folder name in the sorted list of class folders over all splits,
or as a mapping file says (``classes``: a text file with one folder name per line, line n is
class n; or a JSON object {folder: index}), so the classes line up with a model's outputs.

Item order inside a split is by a hash of the item id (its path below the root): fixed, mixes the
classes (so ``limit: 100`` is not 100 images of the first class), and adding files does not
reorder the others. ``revision`` hashes the file list and every file's bytes; digests are
remembered by (path, size, mtime) under the cache root, so an unchanged folder is not re-read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from xaibench.api import Batch
from xaibench.errors import UserError
from xaibench.filehash import file_digests
from xaibench.registry import register

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_FOLDERS = ("train", "test", "val")


def _order_key(item_id: str, salt: str = "") -> str:
    return hashlib.sha1(f"{salt}{item_id}".encode()).hexdigest()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_mapping(path: Path, where: str) -> dict[str, int]:
    if not path.is_file():
        raise UserError(f"{where}: class mapping file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except ValueError as error:
            raise UserError(f"{where}: {path} is not valid JSON: {error}") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, int) and v >= 0 for v in mapping.values()):
            raise UserError(f"{where}: {path} must map each class folder name to a class index >= 0")
        return {str(k): int(v) for k, v in mapping.items()}
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: {path} lists a class twice")
    return {name: i for i, name in enumerate(names)}


@functools.lru_cache(maxsize=16)
def _scan(root: str, classes: str, test_fraction: float, split_seed: int, stamp: tuple) -> tuple[dict, dict[str, int]]:
    """(split -> [(item id, path, class index)] in item order, class mapping); once per process
    and mapping-file version (``stamp``: its size and mtime)."""
    where = f"dataset image_folder ({root})"
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"{where}: root folder not found: {base.resolve()}")
    split_dirs = {s: base / s for s in SPLIT_FOLDERS if (base / s).is_dir()}
    if split_dirs and "test" not in split_dirs:
        raise UserError(f"{where}: split folders {', '.join(split_dirs)} but no test/; add root/test/<class>/")
    sources = split_dirs or {"all": base}
    found = {s: _class_folders(d) for s, d in sources.items()}
    names = sorted(set().union(*found.values()))
    if not names:
        raise UserError(f"{where}: no class folders; expected root/<class>/<image> or root/train|test/<class>/<image>")
    mapping = _read_mapping(Path(classes).expanduser(), where) if classes else {n: i for i, n in enumerate(names)}
    unmapped = [n for n in names if n not in mapping]
    if unmapped:
        raise UserError(f"{where}: class folder {unmapped[0]!r} is not in the mapping file {classes}")
    splits: dict[str, list] = {}
    for split, folder in sources.items():
        items = []
        for name in found[split]:
            for path in _images(folder / name):
                items.append((path.relative_to(base).as_posix(), path, mapping[name]))
        splits[split] = items
    if not any(splits.values()):
        raise UserError(f"{where}: no images ({', '.join(EXTENSIONS)}) under the class folders")
    if not split_dirs:
        splits = _stratified(splits["all"], test_fraction, split_seed)
    ordered = {s: sorted(items, key=lambda item: _order_key(item[0])) for s, items in splits.items()}
    return ordered, mapping


def _stratified(items: list, test_fraction: float, split_seed: int) -> dict[str, list]:
    """Per class, the items first in a seeded hash order go to test (round(n * fraction), at least 1
    when a class has 2 or more images)."""
    by_class: dict[int, list] = {}
    for item in items:
        by_class.setdefault(item[2], []).append(item)
    out: dict[str, list] = {"train": [], "test": []}
    for members in by_class.values():
        members = sorted(members, key=lambda item: _order_key(item[0], f"split{split_seed}:"))
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        out["test"] += members[:n_test]
        out["train"] += members[n_test:]
    return out


def load_image(path: Path, channels: int, resize: int, crop: int) -> np.ndarray:
    """(C, crop, crop) float32 in [0, 1]: convert, resize the shorter side, centre-crop."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            width, height = image.size
            scale = resize / min(width, height)
            size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
            if size != (width, height):
                image = image.resize(size, Image.BILINEAR)
            left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
            image = image.crop((left, top, left + crop, top + crop))
            array = np.asarray(image, dtype=np.float32) / 255.0
    except OSError as error:
        raise UserError(f"dataset image_folder: cannot read image {path}: {error}") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


@register("dataset", "image_folder")
@dataclass(frozen=True)
class ImageFolder:
    """Images in class folders under a local ``root``: ``root/train|test/<class>/`` or
    ``root/<class>/`` with a seeded stratified split (``test_fraction``, ``split_seed``).

    ``resize`` scales the shorter side (0: to ``crop``), then a centre crop of ``crop`` pixels;
    ``channels`` 3 (RGB) or 1 (grey). ``classes``: an optional mapping file (one folder name per
    line, or JSON {folder: index}); by default sorted folder names. ``outputs``: the number of
    classes the model predicts when the folders are a subset (e.g. 1000 for ImageNet weights with
    a JSON mapping to ImageNet indices); 0 = highest class index + 1. Item ids are paths below the
    root. Cost: one image decode per item; the first ``revision`` reads every file once.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset()
    root: str = ""
    resize: int = 0
    crop: int = 224
    channels: Literal[1, 3] = 3
    classes: str = ""
    outputs: int = 0
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        if not self.root:
            raise ValueError("give root, the folder that holds the class folders (or train/ and test/)")
        if not 1 <= self.crop <= 4096 or not 0 <= self.resize <= 4096:
            raise ValueError("crop must be between 1 and 4096, resize between 0 and 4096")
        if self.resize and self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be at least crop ({self.crop}), or 0")
        if self.outputs < 0:
            raise ValueError(f"outputs must be 0 (the number of classes found) or more, got {self.outputs}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def _scanned(self) -> tuple[dict, dict[str, int]]:
        mapping = Path(self.classes).expanduser()
        stamp = (mapping.stat().st_size, mapping.stat().st_mtime_ns) if self.classes and mapping.is_file() else ()
        root = str(Path(self.root).expanduser().resolve())
        return _scan(root, self.classes, self.test_fraction, self.split_seed, stamp)

    def _items(self, split: str) -> list:
        splits = self._scanned[0]
        if split not in splits:
            raise UserError(f"dataset image_folder has no split {split!r}; it has {', '.join(sorted(splits))}")
        return splits[split]

    @property
    def revision(self) -> str:
        splits, mapping = self._scanned
        items = sorted((item for part in splits.values() for item in part), key=lambda item: item[0])
        digests = file_digests([path for _, path, _ in items])
        digest = hashlib.sha256(json.dumps(sorted(mapping.items())).encode())
        for (item_id, _, label), content in zip(items, digests, strict=True):
            digest.update(f"{item_id}\x1f{label}\x1f{content}\n".encode())
        return f"sha256:{digest.hexdigest()}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.crop, self.crop)

    @property
    def num_classes(self) -> int:
        found = max(self._scanned[1].values()) + 1
        if self.outputs and self.outputs < found:
            raise UserError(f"dataset image_folder: outputs is {self.outputs} but the class indices reach {found - 1}")
        return self.outputs or found

    def count(self, split: str) -> int:
        return len(self._items(split))

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        return [item_id for item_id, _, _ in self._items(split)[:limit]]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        items = self._items(split)[start:limit]
        resize = self.resize or self.crop
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            inputs = np.stack([load_image(path, self.channels, resize, self.crop) for _, path, _ in chunk])
            yield Batch(
                ids=[item_id for item_id, _, _ in chunk],
                inputs=torch.from_numpy(inputs),
                labels=torch.tensor([label for _, _, label in chunk], dtype=torch.int64),
            )
