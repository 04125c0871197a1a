"""Attribution methods: conformance over every registered method, analytic references, controls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaibench import registry
from xaibench.errors import IncompatibleError
from xaibench.seeding import item_seeds

METHODS = registry.names("method")


def build(name: str, **params):
    return registry.build("method", name, params)


def predicted(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs).argmax(1)


def input_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = inputs.clone().requires_grad_(True)
    with torch.enable_grad():
        model(x).gather(1, target[:, None]).sum().backward()
    return x.grad


def hooks(model: nn.Module) -> list[str]:
    """Names of modules that carry any forward or backward hook."""
    out = []
    for name, module in model.named_modules():
        for attribute in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(module, attribute, None):
                out.append(f"{name or '<root>'}.{attribute}")
    return out


# ---- conformance: every registered method -------------------------------------------------------


def test_registry_lists_the_builtin_methods():
    for name in ("random", "sobel", "blur_random", "saliency", "integrated_gradients", "smoothgrad", "grad_cam"):
        assert name in METHODS


def applicable(name: str, model: nn.Module):
    """The method, or a skip when its own check refuses this model (e.g. attention_rollout on a CNN)."""
    method = build(name)
    if hasattr(method, "check"):
        try:
            method.check(model)
        except IncompatibleError as error:
            pytest.skip(f"{name} refuses this model: {error}")
    return method


@pytest.mark.parametrize("name", METHODS)
def test_method_conformance(name, tiny_cnn, digits_batch, digits_seeds):
    method = applicable(name, tiny_cnn)
    inputs = digits_batch.inputs
    target = predicted(tiny_cnn, inputs)
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    requires_grad = [p.requires_grad for p in tiny_cnn.parameters()]
    logits_before = tiny_cnn(inputs).detach()
    grad_before = input_gradient(tiny_cnn, inputs, target)
    hooks_before = hooks(tiny_cnn)

    first = method.attribute(tiny_cnn, inputs, target, digits_seeds)
    second = method.attribute(tiny_cnn, inputs, target, digits_seeds)

    assert first.shape == inputs.shape
    assert first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert first.abs().sum() > 0, "an all-zero map carries no ranking"
    assert torch.equal(first, second), "two calls with the same seeds must agree exactly"
    assert not first.requires_grad

    # The model is left as it was: weights, buffers, flags, mode, hooks, outputs and gradients.
    after = tiny_cnn.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]), key
    assert [p.requires_grad for p in tiny_cnn.parameters()] == requires_grad
    assert not tiny_cnn.training
    assert hooks(tiny_cnn) == hooks_before
    assert torch.equal(tiny_cnn(inputs).detach(), logits_before)
    assert torch.allclose(input_gradient(tiny_cnn, inputs, target), grad_before, atol=0, rtol=0), (
        "a backward hook (e.g. guided backprop's ReLU override) was left on the model"
    )


@pytest.mark.parametrize("name", METHODS)
def test_method_item_does_not_depend_on_its_batch(name, tiny_cnn, digits_batch, digits_seeds):
    method = applicable(name, tiny_cnn)
    inputs = digits_batch.inputs
    target = predicted(tiny_cnn, inputs)
    batched = method.attribute(tiny_cnn, inputs, target, digits_seeds)
    alone = method.attribute(tiny_cnn, inputs[3:4], target[3:4], digits_seeds[3:4])
    scale = batched[3].abs().max().clamp_min(1e-12)
    assert torch.allclose(alone[0], batched[3], atol=1e-5 * float(scale), rtol=1e-4)
    # and in another batch composition (reversed order, fewer items)
    keep = [5, 3, 0]
    other = method.attribute(tiny_cnn, inputs[keep], target[keep], digits_seeds[keep])
    assert torch.allclose(other[1], batched[3], atol=1e-5 * float(scale), rtol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_method_works_on_the_trained_model(name, trained_digits_cnn, digits_batch, digits_seeds):
    """The trained model has frozen parameters (requires_grad False), as the runner gives it."""
    method = applicable(name, trained_digits_cnn)
    inputs = digits_batch.inputs[:4]
    target = predicted(trained_digits_cnn, inputs)
    out = method.attribute(trained_digits_cnn, inputs, target, digits_seeds[:4])
    assert out.shape == inputs.shape
    assert torch.isfinite(out).all()
    assert all(not p.requires_grad for p in trained_digits_cnn.parameters())
    assert not hooks(trained_digits_cnn)


# ---- analytic references on a linear model ------------------------------------------------------


@pytest.fixture
def linear_model():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))  # a bias must not leak into attributions
    return model


@pytest.fixture
def linear_inputs():
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def linear_weights(model, target):
    return model[1].weight.detach()[target].view(-1, 1, 8, 8)


TARGET = torch.tensor([0, 1, 2, 1, 0])


def test_integrated_gradients_of_linear_model_is_x_times_w(linear_model, linear_inputs):
    seeds = item_seeds(0, [str(i) for i in range(5)])
    for n_steps in (1, 4, 32):
        out = build("integrated_gradients", n_steps=n_steps).attribute(linear_model, linear_inputs, TARGET, seeds)
        expected = linear_inputs * linear_weights(linear_model, TARGET)
        assert torch.allclose(out, expected, atol=1e-5, rtol=0)
    # completeness: the attributions sum to f(x) - f(0)
    with torch.no_grad():
        gap = (linear_model(linear_inputs) - linear_model(torch.zeros_like(linear_inputs))).gather(1, TARGET[:, None])
    assert torch.allclose(out.flatten(1).sum(1), gap.squeeze(1), atol=1e-4)


def test_saliency_of_linear_model_is_w(linear_model, linear_inputs):
    seeds = item_seeds(0, [str(i) for i in range(5)])
    out = build("saliency").attribute(linear_model, linear_inputs, TARGET, seeds)
    assert torch.allclose(out, linear_weights(linear_model, TARGET), atol=1e-6, rtol=0)


def test_input_x_gradient_and_deeplift_of_linear_model_are_x_times_w(linear_model, linear_inputs):
    seeds = item_seeds(0, [str(i) for i in range(5)])
    expected = linear_inputs * linear_weights(linear_model, TARGET)
    for name in ("input_x_gradient", "deeplift"):
        out = build(name).attribute(linear_model, linear_inputs, TARGET, seeds)
        assert torch.allclose(out, expected, atol=1e-5, rtol=0), name


def test_noise_tunnels_of_linear_model(linear_model, linear_inputs):
    """A linear model has the same gradient everywhere: SmoothGrad = w, SG^2 = w^2, VarGrad = 0."""
    seeds = item_seeds(0, [str(i) for i in range(5)])
    w = linear_weights(linear_model, TARGET)
    assert torch.allclose(build("smoothgrad").attribute(linear_model, linear_inputs, TARGET, seeds), w, atol=1e-6)
    assert torch.allclose(build("smoothgrad_sq").attribute(linear_model, linear_inputs, TARGET, seeds), w**2, atol=1e-6)
    assert build("vargrad").attribute(linear_model, linear_inputs, TARGET, seeds).abs().max() < 1e-6


def test_grad_cam_rejects_a_model_without_conv_layers(linear_model, tiny_cnn):
    for name in ("grad_cam", "guided_grad_cam"):
        with pytest.raises(IncompatibleError, match="Conv2d"):
            build(name).check(linear_model)
        build(name).check(tiny_cnn)  # a CNN passes
    with pytest.raises(IncompatibleError, match="no layer"):
        build("grad_cam", layer="nope").check(tiny_cnn)


def test_grad_cam_named_layer(tiny_cnn, digits_batch, digits_seeds):
    inputs = digits_batch.inputs
    target = predicted(tiny_cnn, inputs)
    convs = [name for name, m in tiny_cnn.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    last = build("grad_cam").attribute(tiny_cnn, inputs, target, digits_seeds)
    named = build("grad_cam", layer=convs[-1]).attribute(tiny_cnn, inputs, target, digits_seeds)
    first = build("grad_cam", layer=convs[0]).attribute(tiny_cnn, inputs, target, digits_seeds)
    assert torch.equal(last, named)
    assert not torch.allclose(last, first)
    assert (last >= 0).all(), "Grad-CAM applies a ReLU"


# ---- noise-tunnel statistics ----------------------------------------------------------------------


def test_vargrad_is_smoothgrad_sq_minus_smoothgrad_squared(tiny_cnn, digits_batch, digits_seeds):
    inputs = digits_batch.inputs
    target = predicted(tiny_cnn, inputs)
    params = {"n_samples": 8, "stdev_spread": 0.2}
    mean = build("smoothgrad", **params).attribute(tiny_cnn, inputs, target, digits_seeds)
    mean_sq = build("smoothgrad_sq", **params).attribute(tiny_cnn, inputs, target, digits_seeds)
    var = build("vargrad", **params).attribute(tiny_cnn, inputs, target, digits_seeds)
    assert torch.allclose(var, mean_sq - mean**2, atol=1e-7 + 1e-5 * float(mean_sq.abs().max()))
    assert (var > -1e-6).all()
    assert var.abs().max() > 0
    # the noise is drawn per item seed: other seeds give another map
    other = build("smoothgrad", **params).attribute(tiny_cnn, inputs, target, digits_seeds + 1)
    assert not torch.allclose(mean, other)
    # and SmoothGrad is not the plain gradient
    plain = build("saliency").attribute(tiny_cnn, inputs, target, digits_seeds)
    assert not torch.allclose(mean, plain)


class _BatchSizes(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.model(x)


@pytest.mark.parametrize("samples_per_pass", [1, 3, 7])
def test_noisy_gradients_chunked_equals_unchunked(samples_per_pass, tiny_cnn, digits_batch, digits_seeds, monkeypatch):
    """Under an element budget the noisy copies go through the model in chunks along the sample
    axis, with the very same gradients as one pass (each item's noise still drawn all at once)."""
    from xaibench.methods import noise_tunnel

    inputs = digits_batch.inputs
    target = predicted(tiny_cnn, inputs)
    n_samples = 8
    model = _BatchSizes(tiny_cnn)
    whole = noise_tunnel.noisy_gradients(model, inputs, target, digits_seeds, n_samples, 0.2)
    assert model.sizes == [n_samples * len(inputs)], "the default budget fits this batch in one pass"

    monkeypatch.setattr(noise_tunnel, "MAX_ELEMENTS_CPU", samples_per_pass * inputs.numel() + 1)
    model.sizes.clear()
    chunked = noise_tunnel.noisy_gradients(model, inputs, target, digits_seeds, n_samples, 0.2)
    expected = [min(samples_per_pass, n_samples - s) * len(inputs) for s in range(0, n_samples, samples_per_pass)]
    assert model.sizes == expected
    assert chunked.shape == (n_samples, *inputs.shape)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    # the methods built on it agree too
    monkeypatch.undo()
    one_pass = build("vargrad", n_samples=n_samples).attribute(tiny_cnn, inputs, target, digits_seeds)
    monkeypatch.setattr(noise_tunnel, "MAX_ELEMENTS_CPU", 1)  # below one sample: still one sample per pass
    torch.testing.assert_close(
        build("vargrad", n_samples=n_samples).attribute(tiny_cnn, inputs, target, digits_seeds),
        one_pass,
        rtol=0,
        atol=0,
    )


def test_noise_tunnel_rejects_too_few_samples():
    from xaibench.errors import UserError

    with pytest.raises(UserError, match="n_samples"):
        registry.build("method", "smoothgrad", {"n_samples": 1})


# ---- controls -------------------------------------------------------------------------------------


def test_random_control_is_seeded_per_item_and_shared_across_channels():
    inputs = torch.rand(4, 3, 8, 8)
    seeds = item_seeds(0, ["a", "b", "c", "d"])
    method = build("random")
    out = method.attribute(None, inputs, torch.zeros(4, dtype=torch.long), seeds)
    assert out.shape == inputs.shape
    assert ((out >= 0) & (out <= 1)).all()
    for c in (1, 2):
        assert torch.equal(out[:, c], out[:, 0]), "the same importance for every channel of a pixel"
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j]), "different item seeds give different maps"
    # it ignores the image and the model: only the seed matters
    again = method.attribute(nn.Identity(), torch.zeros_like(inputs), torch.ones(4, dtype=torch.long), seeds)
    assert torch.equal(out, again)
    # a different run seed gives another map for the same item
    other = method.attribute(None, inputs, torch.zeros(4, dtype=torch.long), item_seeds(1, ["a", "b", "c", "d"]))
    assert not torch.allclose(out, other)
    # and every pixel value is distinct (no ties in the ranking it induces)
    assert out[0, 0].flatten().unique().numel() == 64


def test_blur_random_is_a_smoothed_random_map():
    inputs = torch.zeros(2, 1, 32, 32)
    seeds = item_seeds(0, ["a", "b"])
    target = torch.zeros(2, dtype=torch.long)
    rough = build("random").attribute(None, inputs, target, seeds)
    smooth = build("blur_random").attribute(None, inputs, target, seeds)

    def total_variation(x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()

    assert total_variation(smooth) < 0.5 * total_variation(rough)
    assert not torch.allclose(smooth[0], smooth[1])


def test_sobel_on_a_constant_image_is_zero():
    inputs = torch.full((2, 3, 8, 8), 0.7)
    out = build("sobel").attribute(None, inputs, torch.zeros(2, dtype=torch.long), item_seeds(0, ["a", "b"]))
    assert out.shape == inputs.shape
    assert out.abs().max() < 1e-6  # zero up to float rounding of the channel mean


def test_sobel_peaks_at_a_vertical_step_edge():
    inputs = torch.zeros(1, 1, 8, 8)
    inputs[..., 4:] = 1.0  # step between columns 3 and 4
    out = build("sobel").attribute(None, inputs, torch.zeros(1, dtype=torch.long), item_seeds(0, ["a"]))[0, 0]
    edge = out[:, 3:5]
    assert torch.allclose(edge, torch.full_like(edge, 4.0))  # (1 + 2 + 1) x step height 1
    rest = torch.cat([out[:, :3], out[:, 5:]], dim=1)
    assert torch.equal(rest, torch.zeros_like(rest))
    # a horizontal edge gives the transposed map
    transposed = build("sobel").attribute(
        None, inputs.transpose(-1, -2).contiguous(), torch.zeros(1, dtype=torch.long), item_seeds(0, ["a"])
    )[0, 0]
    assert torch.allclose(transposed, out.T)
