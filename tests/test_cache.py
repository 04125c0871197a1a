"""The content-addressed cache (keys, per-item shards, checksums, root) and the model store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from xaibench import registry
from xaibench.cache import Cache, canonical_json, default_root, make_key
from xaibench.fitting import FitSpec, FittedModels
from xaibench.keys import model_key
from xaibench.manifest import PluginSpec

GOLDEN_COMPONENTS = {
    "kind": "model",
    "name": "digits_cnn",
    "version": "1",
    "params": {"size": 8, "seed": 0, "width": 16, "epochs": 30, "lr": 0.005, "batch_size": 64},
    "revision": "sklearn-digits-0123456789abcdef",
}
# Pinned on purpose. If this test fails, every cache key changed and every user's cache is cold:
# change the hex only together with a deliberate change of the key scheme (and say so in the log).
GOLDEN_KEY = "a20c61cdaa8cfc4eb47e146db6f344dcc3801d9bf9ccf64be941ed4c49fb4fcf"


def test_make_key_golden():
    assert make_key(GOLDEN_COMPONENTS) == GOLDEN_KEY


def test_make_key_is_canonical_and_sensitive():
    reordered = dict(reversed(list(GOLDEN_COMPONENTS.items())))
    reordered["params"] = dict(reversed(list(GOLDEN_COMPONENTS["params"].items())))
    assert make_key(reordered) == GOLDEN_KEY, "key order must not matter"
    assert canonical_json(GOLDEN_COMPONENTS).startswith('{"kind":"model","name":"digits_cnn","params":{"batch_size"')
    for change in ({"version": "2"}, {"revision": "other"}, {"params": {**GOLDEN_COMPONENTS["params"], "seed": 1}}):
        assert make_key({**GOLDEN_COMPONENTS, **change}) != GOLDEN_KEY, change


def test_model_key_follows_params_not_identity():
    a = registry.build("model", "digits_cnn")
    b = registry.build("model", "digits_cnn", {"epochs": 30})  # the default, spelled out
    c = registry.build("model", "digits_cnn", {"seed": 1})
    assert model_key(a) == model_key(b)
    assert model_key(a) != model_key(c)


# ---- per-item tensors ---------------------------------------------------------------------------


def rows(*values: float) -> torch.Tensor:
    return torch.stack([torch.full((2, 3), v) for v in values])


def test_put_get_by_item_id_across_batchings(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"test": "batchings"})
    cache.put("attributions", key, ["a", "b", "c"], rows(1, 2, 3))
    cache.put("attributions", key, ["d", "e"], rows(4, 5))

    for reader in (cache, Cache(tmp_path)):  # the writing process and a fresh one
        found = reader.get("attributions", key, ["e", "a", "d", "zz"])
        assert set(found) == {"e", "a", "d"}
        assert torch.equal(found["e"], torch.full((2, 3), 5.0))
        assert torch.equal(found["a"], torch.full((2, 3), 1.0))
        assert torch.equal(found["d"], torch.full((2, 3), 4.0))
        assert reader.has("attributions", key, ["a", "zz", "c"]) == [True, False, True]
    # keys and kinds are separate namespaces
    assert Cache(tmp_path).get("attributions", make_key({"test": "other"}), ["a"]) == {}
    assert Cache(tmp_path).get("logits", key, ["a"]) == {}


def test_tensors_round_trip_exactly(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"test": "exact"})
    stacked = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = [f"digits-{i:04d}" for i in range(4)]
    cache.put("logits", key, ids, stacked)
    found = Cache(tmp_path).get("logits", key, ids)
    assert torch.equal(torch.stack([found[i] for i in ids]), stacked)
    assert found[ids[0]].dtype == torch.float32


def shard_files(root: Path, kind: str) -> list[Path]:
    return sorted((root / kind).rglob("*.pt"))


def test_corrupted_shard_is_detected_on_read_and_by_verify(tmp_path, capsys):
    cache = Cache(tmp_path)
    key = make_key({"test": "corrupt"})
    cache.put("attributions", key, ["a", "b"], rows(1, 2))
    cache.put("attributions", key, ["c"], rows(3))
    assert cache.verify() == []

    [first, second] = [p for p in shard_files(tmp_path, "attributions")]
    target = first if "a" in json.loads(first.with_suffix(".json").read_text())["ids"] else second
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))

    assert cache.verify() == [target]

    reader = Cache(tmp_path)  # a fresh process: nothing held in memory
    found = reader.get("attributions", key, ["a", "b", "c"])
    assert set(found) == {"c"}, "the corrupt shard's items read as missing (to be recomputed)"
    assert not target.exists()
    assert not target.with_suffix(".json").exists()
    assert "checksum" in capsys.readouterr().err
    assert reader.has("attributions", key, ["a", "c"]) == [False, True]
    assert reader.verify() == []
    # recomputing puts them back
    reader.put("attributions", key, ["a", "b"], rows(1, 2))
    assert set(Cache(tmp_path).get("attributions", key, ["a", "b", "c"])) == {"a", "b", "c"}


def test_corrupted_model_weights_are_detected(tmp_path):
    cache = Cache(tmp_path)
    state = {"weight": torch.arange(6.0)}
    cache.save_model_state("k" * 64, state, {"name": "m"})
    loaded, record = cache.load_model_state("k" * 64)
    assert torch.equal(loaded["weight"], state["weight"])
    assert record["name"] == "m"
    weights = tmp_path / "models" / f"{'k' * 64}.pt"
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    assert cache.verify() == [weights]
    assert cache.load_model_state("k" * 64) is None
    assert not weights.exists()


def test_xaibench_cache_moves_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    cache = Cache()
    assert cache.root == tmp_path / "elsewhere"
    cache.put("logits", make_key({"test": "root"}), ["a"], rows(1))
    assert shard_files(tmp_path / "elsewhere", "logits")
    monkeypatch.delenv("XAIBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "xaibench"


def test_session_never_uses_the_home_cache(session_cache_root):
    assert default_root() == session_cache_root
    assert Path.home() / ".cache" not in default_root().parents


def test_info_and_clear(tmp_path):
    cache = Cache(tmp_path)
    cache.put("logits", make_key({"test": 1}), ["a", "b"], rows(1, 2))
    cache.put("attributions", make_key({"test": 2}), ["a"], rows(1))
    cache.put("attributions", make_key({"test": 3}), ["a"], rows(1))
    cache.save_model_state("m" * 64, {"w": torch.ones(2)}, {"name": "m"})
    info = {row["kind"]: row for row in cache.info()}
    assert info["logits"]["entries"] == 1
    assert info["attributions"]["entries"] == 2
    assert info["models"]["entries"] == 1
    assert all(row["bytes"] > 0 for kind, row in info.items() if kind != "activations")  # no CAM method

    freed = cache.clear("logits")
    assert freed > 0
    assert cache.get("logits", make_key({"test": 1}), ["a"]) == {}
    assert cache.get("attributions", make_key({"test": 2}), ["a"]).keys() == {"a"}

    assert cache.clear() > 0
    assert all(row["entries"] == 0 and row["bytes"] == 0 for row in cache.info())
    assert cache.get("attributions", make_key({"test": 2}), ["a"]) == {}
    assert Cache(tmp_path).models() == []
    assert cache.clear() == 0


# ---- the model store ------------------------------------------------------------------------------


def fit_spec(**params) -> FitSpec:
    return FitSpec(PluginSpec("model", "digits_cnn", canonical_json(params), "test"))


def test_model_store_trains_once_then_loads(session_cache_root, digits_model_spec, trained_digits_cnn):
    store = FittedModels(Cache(session_cache_root), torch.device("cpu"), log=lambda message: None)
    module = store.get(fit_spec())
    assert store.trained == 0, "a warm cache must not retrain"
    assert store.get(fit_spec()) is module, "one module per process"
    reference = trained_digits_cnn.state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())


def test_trained_digits_cnn_is_accurate(session_cache_root, digits_model_spec, trained_digits_cnn):
    records = [r for r in Cache(session_cache_root).models() if r["name"] == "digits_cnn"]
    assert len(records) == 1
    record = records[0]
    assert record["test_accuracy"] >= 0.95
    assert record["train_accuracy"] >= 0.99
    assert record["environment"]["threads"] == 1 and record["train_seconds"] > 0
    assert record["params"] == dataclasses.asdict(digits_model_spec)
    assert record["revision"] == digits_model_spec.revision
    # the recorded accuracy is what the loaded module achieves
    from xaibench.datasets.digits import Digits
    from xaibench.models.training import accuracy, load_split

    inputs, labels = load_split(Digits(), "test")
    assert accuracy(trained_digits_cnn, inputs, labels) == pytest.approx(record["test_accuracy"], abs=1e-6)


def test_model_store_retrains_after_corruption(tmp_path, digits_model_spec, trained_digits_cnn, session_cache_root):
    """Corrupt weights are never loaded. (Uses a 1-epoch variant so retraining stays cheap.)"""
    quick = fit_spec(epochs=1)
    cache = Cache(tmp_path)
    first = FittedModels(cache, torch.device("cpu"), log=lambda message: None)
    first.get(quick)
    assert first.trained == 1
    weights = tmp_path / "models" / f"{quick.key()}.pt"
    weights.write_bytes(b"garbage")
    second = FittedModels(Cache(tmp_path), torch.device("cpu"), log=lambda message: None)
    second.get(quick)
    assert second.trained == 1
    assert Cache(tmp_path).verify() == []


# ---- damage and permissions -----------------------------------------------------------------------


def test_a_damaged_record_is_moved_aside_and_its_items_recomputed(tmp_path, capsys):
    cache = Cache(tmp_path)
    key = make_key({"test": "damaged"})
    cache.put("attributions", key, ["a", "b"], torch.ones(2, 3))
    record = next((tmp_path / "attributions").rglob("*.json"))
    record.write_text("{ not json")
    fresh = Cache(tmp_path)
    assert fresh.get("attributions", key, ["a", "b"]) == {}, "its items read as missing"
    assert "damaged" in capsys.readouterr().err
    assert not record.exists() and record.with_name(record.name + ".damaged").exists()
    fresh.put("attributions", key, ["a", "b"], torch.zeros(2, 3))  # the next run heals it
    assert torch.equal(Cache(tmp_path).get("attributions", key, ["a"])["a"], torch.zeros(3))
    assert Cache(tmp_path).verify() == []


def test_cache_tools_report_a_damaged_model_record_instead_of_crashing(tmp_path, monkeypatch):
    from cli_helpers import invoke

    (tmp_path / "models").mkdir(parents=True)
    (tmp_path / "models" / "abc.json").write_text("[1, 2")
    (tmp_path / "models" / "abc.pt").write_bytes(b"x")
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path))
    info = invoke("cache", "info")
    assert info.exit_code == 0 and "damaged model record" in info.stdout
    verify = invoke("cache", "verify")
    assert verify.exit_code == 1 and "corrupt:" in verify.stdout


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    from xaibench.atomic import write_bytes

    previous = os.umask(0o022)
    try:
        write_bytes(tmp_path / "a.bin", b"x")
        os.umask(0o077)
        write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600
