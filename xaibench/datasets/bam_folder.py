"""`bam`: the published BAM dataset (Yang and Kim, 2019) read from a local folder.

The layout is what google-research-datasets/bam's ``scripts/construct_bam_dataset.py`` writes
under ``data/`` (give that folder as ``root``)::

    root/obj/val/<object>-<scene>-NNNN.jpg     evaluation images (the same files in scene/val)
    root/obj/val.txt                           "<file> <object label>" per line
    root/obj/val_loc.txt                       "<file> row0,col0,row1,col1" (object box, pixels)
    root/obj/val_mask                          np.save'd object array: per object class (sorted
                                               names) its 100 validation masks, each the size of
                                               the object's crop; file NN uses mask class*100+NN
    root/scene/val.txt                         "<file> <scene label>" per line
    root/scene_only/val/<same file names>      the scenes without the pasted object (optional)

Split ``test`` is BAM's ``val`` set (10,000 images; the paper's evaluation set); ``labels``
chooses the object or scene label set as ``batch.labels`` and both are in the extras. Masks
are the object crop's mask resized bilinearly into its box (BAM's ``single_attr``) and
thresholded at 0.5, on the image resized to ``size``. There is no IIR patch variant: BAM's
``bamboo_forest_patch`` set covers one scene class only. Cost: one JPEG decode per image and
variant; the first ``revision`` hashes every file once (remembered by size and mtime).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from xaibench.api import Batch
from xaibench.errors import UserError
from xaibench.filehash import file_digests
from xaibench.registry import register

OBJECTS = ("backpack", "bird", "dog", "elephant", "kite", "pizza", "stop_sign", "toilet", "truck", "zebra")
LAYOUT = "root/obj/val/*.jpg, root/obj/val.txt, root/obj/val_loc.txt, root/obj/val_mask, root/scene/val.txt"


@dataclass(frozen=True)
class _Index:
    files: tuple[str, ...]
    objects: dict[str, int]
    scenes: dict[str, int]
    boxes: dict[str, tuple[int, int, int, int]]
    masks: np.ndarray
    scene_only: bool


def _fail(root: Path, problem: str) -> UserError:
    return UserError(f"dataset bam ({root}): {problem}; expected the BAM data/ layout ({LAYOUT})")


def _lines(root: Path, path: Path) -> list[list[str]]:
    if not path.is_file():
        raise _fail(root, f"missing {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if any(len(row) != 2 for row in rows):
        raise _fail(root, f"{path} has a line that is not '<file> <value>'")
    return rows


def _labels(root: Path, path: Path) -> dict[str, int]:
    try:
        return {name: int(value) for name, value in _lines(root, path)}
    except ValueError:
        raise _fail(root, f"{path} has a label that is not an integer") from None


@functools.lru_cache(maxsize=4)
def _index(root_text: str, stamp: tuple) -> _Index:
    """Every file's labels, box and mask, validated once per process (``stamp`` tracks changes)."""
    root = Path(root_text)
    if not root.is_dir():
        raise _fail(root, "root folder not found")
    objects = _labels(root, root / "obj" / "val.txt")
    scenes = _labels(root, root / "scene" / "val.txt")
    boxes = {}
    for name, text in _lines(root, root / "obj" / "val_loc.txt"):
        try:
            r0, c0, r1, c1 = (int(v) for v in text.split(","))
        except ValueError:
            raise _fail(root, f"val_loc.txt: box {text!r} of {name} is not row0,col0,row1,col1") from None
        boxes[name] = (r0, c0, r1, c1)
    mask_path = next((p for p in (root / "obj" / "val_mask", root / "obj" / "val_mask.npy") if p.is_file()), None)
    if mask_path is None:
        raise _fail(root, "missing obj/val_mask")
    try:
        masks = np.load(mask_path, allow_pickle=True)
    except (OSError, ValueError) as error:
        raise _fail(root, f"cannot read {mask_path}: {error}") from None
    files = tuple(sorted(objects))
    if not files:
        raise _fail(root, "obj/val.txt lists no images")
    for name in files:
        if name not in scenes or name not in boxes:
            raise _fail(root, f"{name} is in obj/val.txt but not in scene/val.txt and obj/val_loc.txt")
        if not (root / "obj" / "val" / name).is_file():
            raise _fail(root, f"image obj/val/{name} is missing")
        if _mask_index(name) >= len(masks):
            raise _fail(root, f"obj/val_mask has {len(masks)} masks, none for {name}")
    scene_only = all((root / "scene_only" / "val" / name).is_file() for name in files)
    return _Index(files, objects, scenes, boxes, masks, scene_only)


def _mask_index(name: str) -> int:
    """BAM's rule (bam/attributions.py): object class index * 100 + the file number's last two digits."""
    stem = name.rsplit(".", 1)[0]
    obj = stem.split("-")[0]
    if obj not in OBJECTS or not stem[-2:].isdigit():
        return 1 << 30
    return OBJECTS.index(obj) * 100 + int(stem[-2:])


def _image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
    except OSError as error:
        raise UserError(f"dataset bam: cannot read image {path}: {error}") from None
    return array.transpose(2, 0, 1) / 255.0


def _mask(crop: np.ndarray, box: tuple[int, int, int, int], scene_side: int, size: int) -> np.ndarray:
    """The crop's mask resized into its box on a ``scene_side`` canvas, then to ``size``."""
    from PIL import Image

    r0, c0, r1, c1 = box
    canvas = np.zeros((scene_side, scene_side), dtype=np.float32)
    resized = Image.fromarray(np.asarray(crop, dtype=np.float32)).resize((c1 - c0, r1 - r0), Image.BILINEAR)
    canvas[r0:r1, c0:c1] = np.asarray(resized)[: scene_side - r0, : scene_side - c0]
    if scene_side != size:
        canvas = np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))
    return canvas >= 0.5


@register("dataset", "bam")
@dataclass(frozen=True)
class BamFolder:
    """The published BAM images (COCO objects on MiniPlaces scenes) from a local ``root``.

    ``labels: object|scene`` picks ``batch.labels``; ``size`` resizes the 128x128 images;
    ``scene_side`` is the side the boxes in val_loc.txt refer to (128 in the release).
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset({"masks", "labels:object", "labels:scene", "variant:scene_only"})
    root: str = ""
    labels: Literal["object", "scene"] = "object"
    size: int = 128
    scene_side: int = 128

    def __post_init__(self):
        if not self.root:
            raise ValueError("give root, BAM's data/ folder (with obj/, scene/ and scene_only/)")
        if self.labels not in ("object", "scene"):
            raise ValueError(f"labels must be 'object' or 'scene', got {self.labels!r}")
        if not 8 <= self.size <= 1024:
            raise ValueError(f"size must be between 8 and 1024, got {self.size}")
        if not 8 <= self.scene_side <= 4096:
            raise ValueError(f"scene_side must be between 8 and 4096, got {self.scene_side}")

    @property
    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _index(self) -> _Index:
        root = self._root
        files = [root / "obj" / "val.txt", root / "scene" / "val.txt", root / "obj" / "val_loc.txt"]
        stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) if f.is_file() else None for f in files)
        return _index(str(root), stamp)

    @property
    def revision(self) -> str:
        index = self._index()
        root = self._root
        paths = [root / "obj" / "val" / name for name in index.files]
        digest = hashlib.sha256()
        for name, content in zip(index.files, file_digests(paths), strict=True):
            digest.update(f"{name}\x1f{index.objects[name]}\x1f{index.scenes[name]}\x1f{content}\n".encode())
        digest.update(index.masks.dumps() if index.masks.dtype != object else repr(index.masks.tolist()).encode())
        return f"sha256:{digest.hexdigest()}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return 10

    def count(self, split: str) -> int:
        if split != "test":
            raise UserError(f"dataset 'bam' has no split {split!r}; use test (BAM's val set)")
        return len(self._index().files)

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        files = self._index().files[: self.count(split) if limit is None else min(limit, self.count(split))]
        return [f"bam-{name.rsplit('.', 1)[0]}" for name in files]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        index, root = self._index(), self._root
        total = self.count(split)
        n = total if limit is None else min(limit, total)
        for first in range(start, n, batch_size):
            names = index.files[first : min(first + batch_size, n)]
            images = np.stack([_image(root / "obj" / "val" / name, self.size) for name in names])
            masks = np.stack(
                [_mask(index.masks[_mask_index(name)], index.boxes[name], self.scene_side, self.size) for name in names]
            )
            objects = torch.tensor([index.objects[name] for name in names], dtype=torch.long)
            scenes = torch.tensor([index.scenes[name] for name in names], dtype=torch.long)
            extras = {"labels:object": objects, "labels:scene": scenes}
            if index.scene_only:
                scene_only = [_image(root / "scene_only" / "val" / name, self.size) for name in names]
                extras["variant:scene_only"] = torch.from_numpy(np.stack(scene_only))
            yield Batch(
                ids=[f"bam-{name.rsplit('.', 1)[0]}" for name in names],
                inputs=torch.from_numpy(images),
                labels=objects if self.labels == "object" else scenes,
                masks=torch.from_numpy(masks).unsqueeze(1),
                extras=extras,
            )
