"""Real architectures: torchvision and user modules (file.py:factory, TorchScript), automatic CAM
layers, the ViT token grid, attention rollout, and every registered method on each fixture model:
it runs (model left unchanged, in eval mode) or `check` refuses it with one line."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from xaibench import registry
from xaibench.activations import layer_activations
from xaibench.errors import IncompatibleError, UserError
from xaibench.methods.cam import find_layer, grad_cam
from xaibench.methods.rollout import attention_weights
from xaibench.models.torchvision_models import ModuleModel, TorchvisionModel
from xaibench.seeding import item_seeds

FACTORY = """
import torch, torchvision

def vit():
    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3,
        dropout=0.1,
    )
    torch.nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision zero-initialises the head
    return net
"""

# Methods that a fixture's model cannot use: `check` must refuse them (exact lists).
REFUSED = {
    "resnet18": {"attention_rollout"},
    "vit": {"fullgrad"},
    "torchscript": {
        "attention_rollout",
        "deconvolution",
        "deeplift",
        "eigen_cam",
        "fullgrad",
        "grad_cam",
        "guided_backprop",
        "guided_grad_cam",
        "score_cam",
    },
}
# Known gaps: methods that neither run nor are refused by `check` yet (strict xfail: when one
# is fixed the test says so and the entry goes).
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
SLOW_METHODS = {"extremal_perturbation"}  # ~20 s per item on these models


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-models")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), folder / "resnet18.pt")
        cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        torch.jit.script(cnn.eval()).save(str(folder / "scripted.pt"))
    (folder / "factory.py").write_text(FACTORY)
    return folder


@pytest.fixture(scope="module")
def models(fixture_files):
    return {
        "resnet18": TorchvisionModel(
            arch="resnet18", weights=str(fixture_files / "resnet18.pt"), num_classes=3, input_size=32
        ).build(),
        "vit": ModuleModel(factory=f"{fixture_files / 'factory.py'}:vit", input_shape=(3, 32, 32)).build(),
        "torchscript": ModuleModel(factory=str(fixture_files / "scripted.pt"), input_shape=(3, 32, 32)).build(),
    }


def _inputs() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _cases():
    for fixture in REFUSED:
        for name in registry.names("method"):
            marks = [pytest.mark.slow] if name in SLOW_METHODS else []
            if (fixture, name) in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[fixture, name], strict=True))
            yield pytest.param(fixture, name, marks=marks, id=f"{fixture}-{name}")


def _hooks(model: nn.Module) -> int:
    return sum(len(getattr(m, a, {})) for m in model.modules() for a in ("_forward_hooks", "_backward_hooks"))


@pytest.mark.parametrize(("fixture", "name"), list(_cases()))
def test_every_method_runs_or_is_refused(models, fixture, name):
    model = models[fixture]
    method = registry.build("method", name)
    if name in REFUSED[fixture]:
        with pytest.raises(IncompatibleError) as refused:
            method.check(model)
        message = str(refused.value)
        assert "\n" not in message and name in message and "cannot explain" in message
        return
    if hasattr(method, "check"):
        method.check(model)
    inputs = _inputs()
    target = model(inputs).argmax(1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    maps = method.attribute(model, inputs, target, item_seeds(0, ["a", "b"]))
    assert maps.shape == inputs.shape and torch.isfinite(maps).all()
    assert not model.training, "explained in eval mode, and left there"
    assert _hooks(model) == hooks
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_refusal_lists_are_exact(models):
    """What runs and what is refused, per fixture, over every registered method."""
    for fixture, model in models.items():
        refused = set()
        for name in registry.names("method"):
            method = registry.build("method", name)
            try:
                getattr(method, "check", lambda m: None)(model)
            except IncompatibleError:
                refused.add(name)
        assert refused == REFUSED[fixture], fixture
        runs = set(registry.names("method")) - refused
        assert {"saliency", "integrated_gradients", "smoothgrad", "random"} <= runs


# ---- models ---------------------------------------------------------------------------------------


def test_torchvision_model_normalises_inside_and_matches_the_plain_network(fixture_files):
    spec = TorchvisionModel(arch="resnet18", weights=str(fixture_files / "resnet18.pt"), num_classes=3)
    model = spec.build()
    net = torchvision.models.resnet18(num_classes=3).eval()
    net.load_state_dict(torch.load(fixture_files / "resnet18.pt", weights_only=True))
    x = _inputs()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)
    assert spec.revision.startswith("sha256:") and spec.revision == spec.revision
    block = model[1].get_submodule("layer1.0")
    assert block.get_submodule("relu") is not block.get_submodule("relu_1"), "ReLUs unshared for DeepLift"


def test_torchvision_model_refuses_missing_or_wrong_weights(fixture_files, monkeypatch, tmp_path):
    with pytest.raises(UserError, match="no weights"):
        registry.build("model", "torchvision", {"arch": "resnet18"})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"resnet18-f37072fd\.pth in .*hub/checkpoints.*never downloads"):
        TorchvisionModel(arch="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1").build()
    wrong = TorchvisionModel(arch="resnet18", weights=str(fixture_files / "resnet18.pt"), num_classes=10)
    with pytest.raises(UserError, match=r"fc\.weight: file \[3, 512\], model \[10, 512\]"):
        wrong.build()
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        TorchvisionModel(arch="resnet81", weights="none").build()


def test_module_model_revision_pins_the_source(fixture_files, tmp_path):
    copy = tmp_path / "factory.py"
    copy.write_text(FACTORY)
    spec = ModuleModel(factory=f"{copy}:vit", input_shape=(3, 32, 32))
    before = spec.revision
    copy.write_text(FACTORY + "\n# edited\n")
    assert spec.revision != before
    with pytest.raises(UserError, match="has no function 'nope'"):
        ModuleModel(factory=f"{copy}:nope").build()


# ---- CAM layers and attention rollout ---------------------------------------------------------------


def test_grad_cam_agrees_with_captum_on_the_found_layer(models):
    model, x = models["resnet18"], _inputs()
    layer = find_layer(model, x, "", "grad_cam")
    assert layer.name == "1.layer3.1.relu_1", "the last map larger than 1x1 (layer4 is 1x1 at 32 px)"
    target = torch.tensor([0, 2])
    ours = grad_cam(model, layer, x, target)
    reference = LayerGradCam(model, layer.module).attribute(x, target=target, relu_attributions=True)
    assert torch.allclose(ours, reference, atol=1e-6)
    upsampled = LayerAttribution.interpolate(reference, (32, 32), "bilinear")
    method = registry.build("method", "grad_cam")
    assert torch.allclose(method.attribute(model, x, target, item_seeds(0, ["a", "b"]))[:, :1], upsampled, atol=1e-6)


def test_gradient_free_cams_use_the_found_layer(models):
    """At 32 px resnet18's last Conv2d is 1x1 (Eigen-CAM was all zero there); Score-CAM and
    Eigen-CAM now read the layer Grad-CAM finds, and a ViT's token grid."""
    x, seeds = _inputs(), item_seeds(0, ["a", "b"])
    target = torch.tensor([0, 1])
    for fixture, side in (("resnet18", 2), ("vit", 4)):
        model = models[fixture]
        layer = find_layer(model, x, "", "eigen_cam")
        activations = layer_activations(model, layer, x)
        assert activations.shape[-2:] == (side, side), fixture
        eigen = registry.build("method", "eigen_cam").attribute(model, x, target, seeds)
        assert (eigen.flatten(1).amax(1) > 0).all(), f"{fixture}: a non-zero Eigen-CAM map"
        named = registry.build("method", "eigen_cam", {"layer": layer.name}).attribute(model, x, target, seeds)
        torch.testing.assert_close(eigen, named)
        score = registry.build("method", "score_cam").attribute(model, x, target, seeds)
        named = registry.build("method", "score_cam", {"layer": layer.name}).attribute(model, x, target, seeds)
        torch.testing.assert_close(score, named)


def test_vit_grad_cam_uses_the_patch_grid(models):
    model, x = models["vit"], _inputs()
    layer = find_layer(model, x, "", "grad_cam")
    assert layer.name.endswith("encoder.layers.encoder_layer_1.ln_1") and layer.tokens == 1
    cam = grad_cam(model, layer, x, torch.tensor([0, 1]))
    assert cam.shape == (2, 1, 4, 4), "32 px / patch 8 = 4x4 tokens, class token dropped"


def test_attention_weights_match_multihead_attention(models):
    vit = models["vit"]
    block = vit.encoder.layers[0]
    tokens = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(1))
    _, reference = block.self_attention(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
    assert torch.allclose(attention_weights(block.self_attention, tokens), reference, atol=1e-6)


def test_attention_rollout_of_identity_attention_is_uniform():
    """With all-zero q/k projections every token attends uniformly; rollout of uniform attention
    gives every patch the same weight, so the map is constant."""
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3
    ).eval()
    for block in vit.encoder.layers:
        with torch.no_grad():
            block.self_attention.in_proj_weight[:64].zero_()
            block.self_attention.in_proj_bias[:64].zero_()
    maps = registry.build("method", "attention_rollout").attribute(vit, _inputs(), torch.tensor([0, 0]), None)
    assert torch.allclose(maps, torch.full_like(maps, maps[0, 0, 0, 0].item()), atol=1e-6)
    # one layer by hand: A = 1/17 everywhere, mixed 0.5 A + 0.5 I; two layers -> class row, patch column
    mixed = 0.5 * torch.full((17, 17), 1 / 17) + 0.5 * torch.eye(17)
    expected = (mixed @ mixed)[0, 1].item()
    assert math.isclose(maps[0, 0, 0, 0].item(), expected, rel_tol=1e-5)
