"""`cache verify --recompute N`: a cache carried between machines is checked by recomputing a
sample; a map that differs from what this machine computes is reported, with exit 1."""

from __future__ import annotations

import io
import json

import torch

from xaibench import verify
from xaibench.cache import Cache, sha256, tensor_bytes
from xaibench.manifest import parse
from xaibench.runner import Runner

MANIFEST = """
name: verify-test
options: {split: test, limit: 16, batch_size: 8, target: predicted, seeds: [0]}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency]
metrics: [deletion: {steps: 8}]
"""


def test_recompute_agrees_then_catches_a_tampered_map(tmp_path, warm_cache):
    import random

    report = Runner(parse(MANIFEST), tmp_path / "results", cache=warm_cache, log=lambda m: None).run()
    assert report.failures == {}
    checked, differing = verify.attributions(Cache(warm_cache.root), 16, random.Random(0))
    assert checked == 16 and differing == []
    checked, differing = verify.rows(Cache(warm_cache.root), tmp_path / "results", 16, random.Random(0))
    assert checked == 16 and differing == []

    # Tamper with one saliency shard, keeping its hash valid: only recomputation can tell.
    for record_path in (warm_cache.root / "attributions").rglob("*.json"):
        record = json.loads(record_path.read_text())
        if record.get("recipe", {}).get("method", [""])[0] == "saliency":
            shard = record_path.with_suffix(".pt")
            maps = torch.load(io.BytesIO(shard.read_bytes()), weights_only=True)
            data = tensor_bytes(maps + 0.01)
            shard.write_bytes(data)
            record_path.write_text(json.dumps({**record, "sha256": sha256(data)}))
            break
    checked, differing = verify.attributions(Cache(warm_cache.root), 32, random.Random(0))
    assert checked == 32
    assert differing and all(d.what == "attribution" and "saliency" in d.where for d in differing)
    assert all(abs(d.difference - 0.01) < 1e-4 for d in differing)


def test_cli_exit_codes(tmp_path, warm_cache, monkeypatch):
    from cli_helpers import invoke

    Runner(parse(MANIFEST), tmp_path / "results", cache=warm_cache, log=lambda m: None).run()
    monkeypatch.setenv("XAIBENCH_CACHE", str(warm_cache.root))
    ok = invoke("cache", "verify", "--recompute", "5", "-r", str(tmp_path / "results"))
    assert ok.exit_code == 0, ok.output
    assert "recomputed 5 cached maps and 5 result rows: 0 maps and 0 rows differ" in ok.stdout
    bad = invoke("cache", "verify", "--recompute", "-1")
    assert bad.exit_code == 2
