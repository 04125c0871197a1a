"""Built-in datasets: digits (real, fixed split) and synthetic (seeded shapes with masks)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from xaibench import registry
from xaibench.api import Dataset
from xaibench.datasets.digits import Digits
from xaibench.datasets.synthetic import SHAPES, Synthetic
from xaibench.errors import UserError


def collect(dataset, split: str, batch_size: int, limit: int | None = None):
    batches = list(dataset.batches(split, batch_size, limit))
    ids = [i for b in batches for i in b.ids]
    inputs = torch.cat([b.inputs for b in batches])
    labels = torch.cat([b.labels for b in batches])
    masks = None if batches[0].masks is None else torch.cat([b.masks for b in batches])
    return ids, inputs, labels, masks, batches


@pytest.mark.parametrize("name", registry.names("dataset"))
def test_dataset_conformance(name):
    try:
        dataset = registry.build("dataset", name)
    except UserError as error:  # data at a local path (image_folder, torchvision, bam): tested on fixtures
        pytest.skip(f"{name} needs local data: {error}")
    assert isinstance(dataset, Dataset)
    assert isinstance(dataset.revision, str) and dataset.revision
    for split in ("train", "test"):
        ids, inputs, labels, _, batches = collect(dataset, split, batch_size=7, limit=20)
        assert len(ids) == 20 == len(set(ids))
        assert [len(b) for b in batches] == [7, 7, 6]
        assert inputs.shape == (20, *dataset.shape)
        assert inputs.dtype == torch.float32
        assert labels.dtype == torch.long
        assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0
        assert ((labels >= 0) & (labels < dataset.num_classes)).all()
    with pytest.raises(UserError, match="split"):
        dataset.count("validation")


# ---- digits -----------------------------------------------------------------------------------------


def test_digits_split_sizes_and_disjoint_ids():
    data = Digits()
    assert data.count("train") == 1437
    assert data.count("test") == 360
    train_ids, *_ = collect(data, "train", 512)
    test_ids, *_ = collect(data, "test", 512)
    assert len(train_ids) == 1437 == len(set(train_ids))
    assert len(test_ids) == 360 == len(set(test_ids))
    assert not set(train_ids) & set(test_ids)
    assert set(train_ids) | set(test_ids) == {f"digits-{i:04d}" for i in range(1797)}
    assert all(re.fullmatch(r"digits-\d{4}", i) for i in test_ids)


def test_digits_split_is_stratified():
    data = Digits()
    _, _, train_labels, _, _ = collect(data, "train", 512)
    _, _, test_labels, _, _ = collect(data, "test", 512)
    train, test = Counter(train_labels.tolist()), Counter(test_labels.tolist())
    assert set(test) == set(range(10))
    for label in range(10):
        share = test[label] / (train[label] + test[label])
        assert share == pytest.approx(0.2, abs=0.01), label


def test_digits_ids_name_the_source_image():
    from sklearn.datasets import load_digits

    source = load_digits()
    ids, inputs, labels, _, _ = collect(Digits(), "test", 64, limit=40)
    for position, item_id in enumerate(ids):
        index = int(item_id.split("-")[1])
        expected = torch.from_numpy(source.images[index].astype(np.float32) / 16.0)
        assert torch.equal(inputs[position, 0], expected)
        assert int(labels[position]) == int(source.target[index])


def test_digits_values_and_deterministic_order():
    data = Digits()
    first = collect(data, "test", 32)
    second = collect(Digits(), "test", 100)
    assert first[0] == second[0]
    assert torch.equal(first[1], second[1])
    assert torch.equal(first[2], second[2])
    assert float(first[1].min()) == 0.0 and float(first[1].max()) == 1.0
    assert first[0] == sorted(first[0]), "items come in index order"


def test_digits_limit_gives_a_prefix():
    data = Digits()
    full_ids, full_inputs, *_ = collect(data, "train", 64)
    for limit in (1, 32, 100):
        ids, inputs, *_ = collect(data, "train", 16, limit=limit)
        assert ids == full_ids[:limit]
        assert torch.equal(inputs, full_inputs[:limit])
    ids, *_ = collect(data, "test", 16, limit=10_000)
    assert len(ids) == 360


def test_digits_upsampling():
    data = registry.build("dataset", "digits", {"size": 16})
    assert data.shape == (1, 16, 16)
    ids, inputs, *_ = collect(data, "test", 8, limit=8)
    assert inputs.shape == (8, 1, 16, 16)
    assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0
    assert ids == collect(Digits(), "test", 8, limit=8)[0], "ids survive a change of size"
    assert data.revision == Digits().revision, "the same source data"
    with pytest.raises(UserError, match="size"):
        registry.build("dataset", "digits", {"size": 4})


def test_digits_revision_pins_the_data():
    assert Digits().revision.startswith("sklearn-digits-")
    assert Digits().revision == Digits(split_seed=1).revision
    ids_0, *_ = collect(Digits(), "test", 512)
    ids_1, *_ = collect(Digits(split_seed=1), "test", 512)
    assert ids_0 != ids_1, "split_seed changes the split"


# ---- synthetic ------------------------------------------------------------------------------------


def test_synthetic_item_is_regenerated_identically():
    data = Synthetic()
    for split, index in (("test", 0), ("test", 17), ("train", 3)):
        image, label, mask = data.item(split, index)
        again_image, again_label, again_mask = Synthetic().item(split, index)
        assert np.array_equal(image, again_image)
        assert label == again_label
        assert np.array_equal(mask, again_mask)
    assert not np.array_equal(data.item("test", 0)[0], data.item("test", 1)[0])
    assert not np.array_equal(data.item("test", 0)[0], data.item("train", 0)[0])
    assert not np.array_equal(data.item("test", 0)[0], Synthetic(seed=1).item("test", 0)[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_masks_mark_bright_shapes(channels):
    data = Synthetic(size=24, channels=channels)
    _, inputs, labels, masks, _ = collect(data, "test", 16, limit=40)
    assert masks.shape == (40, 1, 24, 24)
    assert masks.dtype == torch.bool
    assert set(labels.tolist()) == set(range(len(SHAPES))), "every shape occurs in 40 items"
    for image, mask in zip(inputs, masks[:, 0], strict=True):
        assert mask.any() and not mask.all()
        inside = image[:, mask]
        outside = image[:, ~mask]
        assert float(inside.min()) >= 0.6 > data.noise >= float(outside.max())


def test_synthetic_batches_do_not_depend_on_batch_size():
    data = Synthetic(size=16)
    a = collect(data, "test", 5, limit=23)
    b = collect(data, "test", 23, limit=23)
    c = collect(data, "test", 1, limit=23)
    assert a[0] == b[0] == c[0]
    assert a[0][0] == "synthetic-test-000000" and a[0][-1] == "synthetic-test-000022"
    for x, y in zip(a[1:4], b[1:4], strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a[1], c[1])


def test_synthetic_streams_late_items():
    data = Synthetic(size=16, n_test=10_000)
    image, label, mask = data.item("test", 4_999)
    ids, inputs, labels, masks, _ = collect(data, "test", 64, limit=5_000)
    assert len(ids) == 5_000
    assert ids[-1] == "synthetic-test-004999"
    assert torch.equal(inputs[-1], torch.from_numpy(image))
    assert int(labels[-1]) == label
    assert torch.equal(masks[-1, 0], torch.from_numpy(mask))
    assert data.count("test") == 10_000


def test_synthetic_parameter_checks():
    with pytest.raises(UserError, match="channels"):
        registry.build("dataset", "synthetic", {"channels": 2})
    with pytest.raises(UserError, match="noise"):
        registry.build("dataset", "synthetic", {"noise": 0.9})
    assert Synthetic().revision != Synthetic(seed=1).revision
