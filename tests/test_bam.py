"""BAM: the generated dataset (determinism, exact masks, balance), the published-layout reader,
the region attribution against BAM's own formula, the board's MCS/IDR/IIR joins on hand-built
rows with known answers, and a small run of both models end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from xaibench import results
from xaibench.boards import bam as board
from xaibench.cache import Cache
from xaibench.datasets.bam_folder import BamFolder
from xaibench.datasets.bam_synth import BamSynth
from xaibench.errors import UserError
from xaibench.manifest import parse
from xaibench.metrics.bam import region_attribution
from xaibench.runner import Runner


def first(dataset: BamSynth, n: int = 50, split: str = "test", start: int = 0):
    return next(dataset.batches(split, n, limit=start + n, start=start))


def test_items_are_the_same_for_a_seed_whatever_the_batching():
    a, b = first(BamSynth()), first(BamSynth(n_test=60))
    assert a.ids == b.ids
    for x, y in [(a.inputs, b.inputs), (a.masks, b.masks), *((a.extras[k], b.extras[k]) for k in a.extras)]:
        assert torch.equal(x, y)
    window = first(BamSynth(), n=10, start=20)
    assert window.ids == a.ids[20:30] and torch.equal(window.inputs, a.inputs[20:30])
    assert not torch.equal(first(BamSynth(seed=1)).inputs, a.inputs)
    assert not torch.equal(first(BamSynth(), split="train").inputs, a.inputs)


def test_masks_are_exactly_the_pasted_pixels_and_the_patch_avoids_the_object():
    batch = first(BamSynth(), n=100)
    for i in range(len(batch)):
        image, scene = batch.inputs[i], batch.extras["variant:scene_only"][i]
        mask, patch = batch.masks[i, 0], batch.extras["mask:patch"][i, 0]
        assert mask.float().mean() > 0.05
        assert torch.equal(image[:, ~mask], scene[:, ~mask])  # outside the object: the scene
        colours = image[:, mask].T.unique(dim=0)
        assert len(colours) == 1 and colours.max() == 1.0  # inside: one saturated colour
        assert not (colours[0] == scene[:, mask].T).all(1).any()  # ... that differs from every scene pixel
        patched = batch.extras["variant:patch"][i]
        assert torch.equal(patched[:, ~patch], image[:, ~patch])
        assert not (patch & mask).any()


def test_object_labels_are_balanced_across_scenes_and_labels_choose_the_set():
    batch = first(BamSynth(), n=300, split="train")
    objects, scenes = batch.extras["labels:object"].numpy(), batch.extras["labels:scene"].numpy()
    table = pd.crosstab(objects, scenes)
    assert table.shape == (10, 10) and (table.to_numpy() == 3).all()
    assert torch.equal(batch.labels, batch.extras["labels:object"])
    scene_batch = first(BamSynth(labels="scene"), n=300, split="train")
    assert torch.equal(scene_batch.labels, batch.extras["labels:scene"])
    assert torch.equal(scene_batch.inputs, batch.inputs)


def bam_region(map_3d: np.ndarray, mask: np.ndarray) -> float:
    """BAM's visualize_pos_attr (channels last) and the mean over a binary mask, in numpy."""
    image_2d = np.sum(map_3d.clip(min=0), axis=2)
    vmax, vmin = np.percentile(image_2d, 99), np.min(image_2d)
    normalised = np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)
    return float(normalised[mask].mean())


def test_region_attribution_is_bams_formula():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    masks = rng.uniform(size=(4, 1, 16, 16)) < 0.3
    got = region_attribution(torch.from_numpy(maps), torch.from_numpy(masks))
    expected = [bam_region(maps[i].transpose(1, 2, 0), masks[i, 0]) for i in range(4)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # max-normalisation: 1 at the peak; a constant map points at nothing; an empty region is NaN
    peak = torch.zeros(1, 1, 4, 4)
    peak[0, 0, 0, 0], peak[0, 0, 1, 1] = 4.0, 1.0
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[0, 0, :2, :2] = True
    assert region_attribution(peak, region, "max").item() == pytest.approx((1 + 0.25) / 4)
    assert region_attribution(torch.ones(1, 1, 4, 4), region).item() == 0.0
    assert torch.isnan(region_attribution(peak, torch.zeros_like(region)))


def rows_of(metric: str, labels: str, method: str, items: list[tuple], names: list[str], params=None) -> list[dict]:
    """Hand-built result rows: items are (item_id, label, prediction, *score values)."""
    out = []
    for item_id, label, prediction, *values in items:
        for name, value in zip(names, values, strict=True):
            out.append(
                {
                    "model": "bam_obj" if labels == "object" else "bam_scene",
                    "dataset": "bam_synth",
                    "dataset_params": json.dumps({"labels": labels, "size": 32}),
                    "split": "test",
                    "method": method,
                    "method_params": "{}",
                    "metric": metric,
                    "metric_params": json.dumps({"normalize": "bam", **(params or {})}),
                    "seed": 0,
                    "item_id": item_id,
                    "label": label,
                    "prediction": prediction,
                    "score": name,
                    "value": value,
                    "x": np.nan,
                    "valid": True,
                }
            )
    return out


def test_mcs_is_object_minus_scene_over_items_both_models_get_right():
    frame = pd.DataFrame(
        rows_of("mcs", "object", "saliency", [("a", 1, 1, 0.9), ("b", 2, 2, 0.6), ("c", 3, 0, 0.8)], ["region"])
        + rows_of("mcs", "scene", "saliency", [("a", 4, 4, 0.1), ("b", 5, 5, 0.4), ("c", 6, 6, 0.0)], ["region"])
        + rows_of("mcs", "scene", "saliency", [("d", 4, 4, 0.1)], ["region"])
    )
    items = board.mcs_items(board._prepare(frame))
    assert sorted(items["unit"]) == ["a#0", "b#0"]  # c: the object model is wrong; d: no pair
    assert items["value"].mean() == pytest.approx(((0.9 - 0.1) + (0.6 - 0.4)) / 2)


def test_idr_is_the_share_of_correct_scene_pairs_attributed_more_without_the_object():
    names = ["region", "region_scene_only", "correct_scene_only"]
    frame = pd.DataFrame(
        rows_of("idr", "scene", "grad_cam", [("a", 1, 1, 0.2, 0.5, 1), ("b", 1, 1, 0.6, 0.3, 1)], names)
        + rows_of("idr", "scene", "grad_cam", [("c", 1, 1, 0.1, 0.9, 0), ("d", 1, 2, 0.1, 0.9, 1)], names)
        + rows_of("idr", "scene", "grad_cam", [("e", 1, 1, 0.3, 0.4, 1)], names)
        + rows_of("idr", "object", "grad_cam", [("f", 1, 1, 0.9, 0.1, 1)], names)  # object model: not IDR
    )
    items = board.idr_items(board._prepare(frame))
    assert sorted(items["unit"]) == ["a#0", "b#0", "e#0"]
    assert items["value"].mean() == pytest.approx(2 / 3)


def test_iir_keeps_insignificant_patches_and_counts_stable_attributions():
    names = ["region", "region_patched", "logit_change", "correct_patched"]
    items = [
        ("a", 1, 1, 0.50, 0.52, 0.05, 1),  # stable (0.02 < 0.05)
        ("b", 1, 1, 0.50, 0.70, 0.05, 1),  # changes
        ("c", 1, 1, 0.50, 0.50, 0.30, 1),  # logits changed: not a functionally insignificant patch
        ("d", 1, 1, 0.50, 0.50, 0.01, 0),  # patched image misclassified
        ("e", 1, 1, 0.00, 0.00, 0.01, 1),  # zero attribution: |0| < 0.1 * 0 is false (BAM's rule)
    ]
    frame = pd.DataFrame(rows_of("iir", "scene", "saliency", items, names, {"max_logit_change": 0.1, "tolerance": 0.1}))
    got = board.iir_items(board._prepare(frame))
    assert sorted(got["unit"]) == ["a#0", "b#0", "e#0"]
    assert got["value"].mean() == pytest.approx(1 / 3)
    loose = pd.DataFrame(rows_of("iir", "scene", "saliency", items, names, {"max_logit_change": 0.5, "tolerance": 0.5}))
    kept = board.iir_items(board._prepare(loose))
    assert sorted(kept["unit"]) == ["a#0", "b#0", "c#0", "e#0"] and kept["value"].sum() == 3  # a, b, c stable


def test_the_board_compares_with_random_and_shows_randoms_iir():
    rng = np.random.default_rng(0)
    frames = []
    for method, obj_region in (("random", 0.5), ("grad_cam", 0.9)):
        ids = [f"i{k}" for k in range(40)]
        obj = [(i, 1, 1, obj_region + rng.normal(0, 0.01)) for i in ids]
        scene = [(i, 2, 2, 0.5 + rng.normal(0, 0.01)) for i in ids]
        frames += rows_of("mcs", "object", method, obj, ["region"]) + rows_of("mcs", "scene", method, scene, ["region"])
        iir = [(i, 2, 2, 0.5, 0.5 if method == "random" else 0.9, 0.01, 1) for i in ids]
        frames += rows_of("iir", "scene", method, iir, ["region", "region_patched", "logit_change", "correct_patched"])
    [(title, table)] = board.tables(pd.DataFrame(frames))
    row = table.set_index("method").loc["grad_cam"]
    assert row["MCS verdict"] == "beats random" and row["MCS"].startswith("0.40")
    assert row["IIR verdict"] == "worse than random" and row["IIR random"] == "1.000 [1.000, 1.000]"
    assert board.tables(pd.DataFrame(rows_of("deletion", "object", "saliency", [("a", 1, 1, 0.5)], ["auc"]))) == []


def write_bam_fixture(root, scene_only=True):
    """Two images in BAM's data/ layout; the dog's mask is a 4x4 crop, placed in its 8x8 box."""
    from PIL import Image

    names = ["dog-bedroom-0903.jpg", "zebra-runway-0900.jpg"]
    for folder in ("obj", "scene", "scene_only"):
        (root / folder / "val").mkdir(parents=True)
    for k, name in enumerate(names):
        pixels = np.full((16, 16, 3), 40 * (k + 1), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "obj" / "val" / name)
        if scene_only:
            Image.fromarray(pixels // 2).save(root / "scene_only" / "val" / name)
    (root / "obj" / "val.txt").write_text("dog-bedroom-0903.jpg 2\nzebra-runway-0900.jpg 9\n")
    (root / "scene" / "val.txt").write_text("dog-bedroom-0903.jpg 1\nzebra-runway-0900.jpg 7\n")
    (root / "obj" / "val_loc.txt").write_text("dog-bedroom-0903.jpg 2,4,10,12\nzebra-runway-0900.jpg 0,0,16,16\n")
    masks = np.empty(1000, dtype=object)
    for k in range(1000):
        masks[k] = np.zeros((4, 4), dtype=np.uint8)
    masks[2 * 100 + 3] = np.ones((4, 4), dtype=np.uint8)  # dog, file 03
    masks[9 * 100 + 0][:2, :] = 1  # zebra, file 00: its top half
    with open(root / "obj" / "val_mask", "wb") as handle:
        np.save(handle, masks)


def test_the_bam_folder_reads_the_published_layout(tmp_path):
    write_bam_fixture(tmp_path)
    data = BamFolder(root=str(tmp_path), labels="scene", size=16, scene_side=16)
    assert data.count("test") == 2 and data.item_ids("test") == ["bam-dog-bedroom-0903", "bam-zebra-runway-0900"]
    batch = next(data.batches("test", 8))
    assert batch.labels.tolist() == [1, 7] and batch.extras["labels:object"].tolist() == [2, 9]
    expected = np.zeros((2, 16, 16), dtype=bool)
    expected[0, 2:10, 4:12] = True
    expected[1, :8, :] = True
    assert (batch.masks[:, 0].numpy() == expected).all()
    assert batch.inputs[0].mean().item() == pytest.approx(40 / 255, abs=1e-3)
    assert batch.extras["variant:scene_only"][0].mean().item() == pytest.approx(20 / 255, abs=1e-3)


def test_a_missing_or_malformed_bam_folder_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="root folder not found"):
        BamFolder(root=str(tmp_path / "nowhere")).count("test")
    write_bam_fixture(tmp_path)
    (tmp_path / "obj" / "val_loc.txt").write_text("dog-bedroom-0903.jpg 2,4,10\nzebra-runway-0900.jpg 0,0,16,16\n")
    with pytest.raises(UserError, match="not row0,col0,row1,col1"):
        BamFolder(root=str(tmp_path)).count("test")
    (tmp_path / "obj" / "val_loc.txt").write_text("dog-bedroom-0903.jpg 2,4,10,12\n")
    with pytest.raises(UserError, match="not in scene/val.txt and obj/val_loc.txt"):
        BamFolder(root=str(tmp_path)).count("test")


MANIFEST = """
name: bam-test
options: {{split: test, limit: 24, batch_size: 12, target: predicted, seeds: [0]}}
models: [{model}: {{n_train: 300, epochs: 1, width: 4}}]
datasets: [bam_synth: {{labels: {labels}}}]
methods: [random, saliency, grad_cam]
metrics: [mcs, idr, iir]
"""


@pytest.mark.slow
def test_a_small_bam_run_end_to_end(tmp_path):
    cache = Cache(tmp_path / "cache")
    for model, labels in (("bam_obj", "object"), ("bam_scene", "scene")):
        report = Runner(parse(MANIFEST.format(model=model, labels=labels)), tmp_path / "results", cache=cache).run()
        assert not report.failures
    frame = results.read(tmp_path / "results" / "bam-test")
    assert set(frame["metric"]) == {"mcs", "idr", "iir"} and frame["valid"].all()
    assert set(json.loads(p)["normalize"] for p in frame["metric_params"]) == {"bam"}
    tables = dict(board.tables(frame))
    [table] = [t for title, t in tables.items() if title.startswith("BAM: MCS")]
    assert set(table["method"]) == {"random", "saliency", "grad_cam"}
    assert {"MCS", "IDR", "IIR", "IIR random", "MCS − random"} <= set(table.columns)
