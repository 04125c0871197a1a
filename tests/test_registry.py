"""Plugin discovery through the `xaibench.plugins` entry-point group, and parameter checking."""

from __future__ import annotations

import sys
import textwrap

import pytest

from xaibench import registry
from xaibench.errors import UserError


@pytest.fixture
def installed_plugin_package(tmp_path, monkeypatch):
    """A package installed the way pip leaves one: a module and a .dist-info with entry points."""
    (tmp_path / "acme_saliency.py").write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass
            from typing import ClassVar

            from xaibench.registry import register


            @register("method", "acme_flat")
            @dataclass(frozen=True)
            class AcmeFlat:
                """Constant importance (test plugin from an installed package)."""

                version: ClassVar[str] = "1"
                level: float = 1.0

                def attribute(self, model, inputs, target, seeds):
                    return inputs * 0 + self.level
            '''
        )
    )
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    info = tmp_path / "acme_saliency-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-saliency\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[xaibench.plugins]\nacme = acme_saliency\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTINS_LOADED", False)
    yield
    sys.modules.pop("acme_saliency", None)
    sys.modules.pop("broken_plugin", None)


def test_entry_point_plugins_are_registered_and_broken_ones_only_warn(installed_plugin_package, capsys):
    registry.load_builtins()
    assert "acme_flat" in registry.names("method")
    assert "saliency" in registry.names("method"), "built-ins load beside entry points"
    assert registry.build("method", "acme_flat", {"level": 2}).level == 2.0
    warning = capsys.readouterr().err
    assert "plugin entry point 'broken' failed to load" in warning
    assert "this plugin is broken" in warning


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_steps": 8.5}, "expected an integer"),
        ({"n_steps": True}, "expected an integer"),
        ({"n_steps": 0}, "n_steps must be at least 1"),
        ({"nsteps": 8}, "did you mean 'n_steps'"),
    ],
)
def test_build_checks_parameters(params, message):
    with pytest.raises(UserError, match=message):
        registry.build("method", "integrated_gradients", params, where="here")


def test_build_coerces_yaml_values_to_field_types():
    metric = registry.build("metric", "deletion", {"steps": 10, "blur_sigma": 2})
    assert metric.blur_sigma == 2.0 and isinstance(metric.blur_sigma, float)
    assert registry.canonical_params(metric) == {
        "steps": 10,
        "reduce": "abs_sum",
        "blur_sigma": 2.0,
        "fill": "black",
        "order": "morf",
    }


def test_unknown_plugin_suggests_the_nearest_name():
    with pytest.raises(UserError, match="did you mean 'integrated_gradients'"):
        registry.get("method", "integrated_gradient")
