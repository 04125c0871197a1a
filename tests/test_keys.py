"""Golden keys: every recipe in keys.py is pinned, so a change of any key is deliberate.

A failing test here means cached models, maps and result rows written before the change will
no longer be found (they are recomputed). If that is intended, update the hex below and say so
in the change's note.
"""

from __future__ import annotations

import pytest

from xaibench import keys, registry
from xaibench.fitting import FitSpec
from xaibench.manifest import PluginSpec

GOLDEN = {
    "model": "9463d9b03923726a515a84af105c7d7009849b13a5cf0de0d7d83ce1463f5147",
    "data": "4ada4af1bc124609327ba3aedb60f75b5fc85a5f54eed07e8ddf764164cfe136",
    "transform": "1d9e68a9040f20f08e27092677b8165637e51b13d0cad0877f3e12177bec3c18",
    "fit": "89fea9c2d9b8f9dcaef214102e87ce7787aa8556adb27a91d8de4e56783fef77",
    "fit_permuted": "2c4ae35cfd2db8a390794d0687fe4645a5e0d88c17856adc48669bd12f3c3e92",
    "logits": "b18ceaf4de9eb0696e064903ca683c4ee326c7a5c8f06e027f2aeaead8fe2580",
    "activations": "46e261ee77e5c4634e7af29bc270290715d46d8dde3b25c748093e27c058861c",
    "attribution": "044ff03073676e1ca51afd673475479ee57033625715276051cc66df7353bf32",
    "score": "6d1fb84192d1e2e9b1a25b252db59d95a5733ed15738b46f60accfd7bc3ec632",
}


@pytest.fixture(scope="module")
def computed() -> dict[str, str]:
    model, digits = registry.build("model", "digits_cnn"), registry.build("dataset", "digits")
    model_key = keys.model_key(model)
    test_data = keys.data_key(digits, "test")
    train_data = keys.data_key(digits, "train")
    transform = keys.transform_key("permuted_labels", {"seed": 0})
    fit = keys.fit_key(model_key, train_data, None, 0)
    attribution = keys.attribution_key(fit, test_data, registry.build("method", "saliency"), "predicted", 0)
    return {
        "model": model_key,
        "data": test_data,
        "transform": transform,
        "fit": fit,
        "fit_permuted": keys.fit_key(model_key, train_data, transform, 0),
        "logits": keys.logits_key(fit, test_data),
        "activations": keys.activation_key(fit, test_data, "auto:2"),
        "attribution": attribution,
        "score": keys.score_key(attribution, registry.build("metric", "deletion")),
    }


@pytest.mark.parametrize("recipe", sorted(GOLDEN))
def test_key_recipe_is_pinned(computed, recipe):
    assert computed[recipe] == GOLDEN[recipe]


def test_fit_spec_uses_the_fit_recipe(computed):
    from xaibench.transforms import PermutedLabels

    spec = PluginSpec("model", "digits_cnn", "{}", "test")
    assert FitSpec(spec).key() == computed["fit"]
    assert FitSpec(spec, transform=PermutedLabels(0), role="permuted").key() == computed["fit_permuted"]
    assert FitSpec(spec, seed=1).key() != computed["fit"], "a repeat's seed is a different fit"


def test_keys_ignore_batching_parameters_and_follow_the_rest():
    method = registry.build("method", "occlusion")
    batched = registry.build("method", "occlusion", {"perturbations_per_eval": 7})
    other = registry.build("method", "occlusion", {"window": 2})
    args = ("f" * 64, "d" * 64)
    same = keys.attribution_key(*args, method, "predicted", 0)
    assert keys.attribution_key(*args, batched, "predicted", 0) == same
    assert keys.attribution_key(*args, other, "predicted", 0) != same
    assert keys.attribution_key(*args, method, "label", 0) != same
    assert keys.attribution_key(*args, method, "predicted", 1) != same
