"""Known answers for the methods of the key papers: FullGrad, extremal perturbation, Score-CAM,
Eigen-CAM, RISE and XRAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xaibench import registry
from xaibench.errors import IncompatibleError
from xaibench.methods import score_cam as score_cam_module
from xaibench.methods.fullgrad import decompose
from xaibench.methods.xrai import xrai_regions
from xaibench.models.layers import Normalize
from xaibench.seeding import item_seeds

SIZE = 16
NAMES = ("score_cam", "eigen_cam", "fullgrad", "rise", "xrai", "extremal_perturbation")


def build(name: str, **params):
    return registry.build("method", name, params)


def seeds_for(n: int) -> torch.Tensor:
    return item_seeds(0, [f"item-{i}" for i in range(n)], "method")


def square(top: int, left: int, side: int = 4) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[top : top + side, left : left + side] = True
    return mask


REGION = square(2, 3)  # what the hand-built model looks at
DISTRACTOR = square(10, 9)  # just as bright, ignored by the model


def region_model(scale: float = 40.0, offset: float = 20.0) -> nn.Module:
    """logit 0 = scale * mean of x over REGION - offset; logit 1 = 0. Looks only at REGION."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = REGION.flatten().float() * scale / REGION.sum()
        model[1].bias.copy_(torch.tensor([-offset, 0.0]))
    return model.eval()


def two_squares(n: int) -> torch.Tensor:
    """Images with both squares bright (1.0) on a dim noisy background."""
    noise = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    images = 0.1 + 0.1 * noise
    images[:, :, REGION] = 1.0
    images[:, :, DISTRACTOR] = 1.0
    return images


def iou_of_top(saliency: torch.Tensor, region: torch.Tensor) -> float:
    """IoU of the top-|region| pixels of a (1, H, W) map with the region."""
    k = int(region.sum())
    top = torch.zeros(SIZE * SIZE, dtype=torch.bool)
    top[saliency[0].flatten().topk(k).indices] = True
    region = region.flatten()
    return float((top & region).sum() / (top | region).sum())


# ---- FullGrad: completeness -------------------------------------------------------------------


def relu_net() -> nn.Module:
    """Piecewise linear, with every kind of bias: Normalize, conv, BatchNorm (eval), linear."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(1),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).double()
    with torch.no_grad():
        model[0].mean.fill_(0.3)
        model[0].std.fill_(0.7)
        batchnorm = model[2]
        batchnorm.running_mean.uniform_(-0.5, 0.5)
        batchnorm.running_var.uniform_(0.5, 2.0)
        batchnorm.weight.uniform_(0.5, 1.5)
        batchnorm.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_fullgrad_parts_sum_to_the_output():
    model = relu_net()
    inputs = torch.rand(5, 1, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 1, 0])
    input_part, bias_parts = decompose(model, inputs, target)
    assert [name for name, _ in bias_parts] == ["0", "1", "2", "5", "9", "11"]
    total = input_part.flatten(1).sum(1) + sum(part.flatten(1).sum(1) for _, part in bias_parts)
    with torch.no_grad():
        logits = model(inputs).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(total, logits, rtol=1e-10, atol=1e-10)
    # the input part is grad_x * x, computed independently
    x = inputs.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    torch.testing.assert_close(input_part, x.grad * inputs)
    # and the bias parts matter: without them the sum misses the output
    assert (input_part.flatten(1).sum(1) - logits).abs().max() > 0.1


def test_fullgrad_map_is_the_post_processed_sum(tiny_cnn, digits_batch, digits_seeds):
    inputs = digits_batch.inputs
    target = tiny_cnn(inputs).argmax(1)
    out = build("fullgrad").attribute(tiny_cnn, inputs, target, digits_seeds)
    input_part, bias_parts = decompose(tiny_cnn, inputs, target)
    spatial = [input_part] + [part for _, part in bias_parts if part.dim() == 4]
    assert len(spatial) == 1 + 4  # Normalize and three convs; the two linear layers have no map
    expected = 0
    for part in spatial:
        part = part.abs()
        part = part - part.flatten(1).amin(1).view(-1, 1, 1, 1)
        part = part / (part.flatten(1).amax(1).view(-1, 1, 1, 1) + 1e-6)
        part = nn.functional.interpolate(part, size=(8, 8), mode="bilinear", align_corners=True)
        expected = expected + part.sum(1, keepdim=True)
    torch.testing.assert_close(out, expected.expand_as(inputs))
    assert (out >= 0).all() and out.amax() <= len(spatial) * 32


# ---- extremal perturbation: finds the region the model looks at -------------------------------


def test_extremal_perturbation_finds_the_region_the_model_uses():
    model = region_model()
    images = two_squares(2)
    area = float(REGION.sum()) / SIZE**2
    method = build("extremal_perturbation", area=area)
    masks = method.attribute(model, images, torch.zeros(2, dtype=torch.long), seeds_for(2))
    assert masks.min() >= 0 and masks.max() <= 1
    for mask in masks:
        assert iou_of_top(mask, REGION) >= 0.6
        assert iou_of_top(mask, DISTRACTOR) == 0
        # and the area constraint holds: about |REGION| pixels are on
        assert abs(float((mask > 0.5).sum()) - float(REGION.sum())) <= 0.5 * float(REGION.sum())


def test_extremal_perturbation_rejects_bad_parameters():
    from xaibench.errors import UserError

    for params in ({"area": 0.0}, {"area": 1.0}, {"iterations": 0}, {"sigma": -1.0}):
        with pytest.raises(UserError):
            registry.build("method", "extremal_perturbation", params)


# ---- Score-CAM and Eigen-CAM ------------------------------------------------------------------


def test_score_cam_equals_a_loop_over_channels(tiny_cnn, digits_batch, digits_seeds, monkeypatch):
    """An independent reference: one masked forward pass per (item, channel), in a plain loop."""
    inputs = digits_batch.inputs[:3]
    target = tiny_cnn(inputs).argmax(1)
    layer = [m for m in tiny_cnn.modules() if isinstance(m, nn.Conv2d)][-1]
    activations = score_cam_module.layer_activations(tiny_cnn, layer, inputs)
    expected = torch.zeros(3, 1, *activations.shape[-2:])
    with torch.no_grad():
        for b in range(3):
            for k in range(activations.shape[1]):
                up = nn.functional.interpolate(activations[b : b + 1, k : k + 1], size=(8, 8), mode="bilinear")
                if up.max() == up.min():
                    continue
                mask = (up - up.min()) / (up.max() - up.min())
                weight = tiny_cnn(inputs[b : b + 1] * mask).softmax(-1)[0, target[b]]
                expected[b, 0] += weight * activations[b, k]
    expected = nn.functional.interpolate(torch.relu(expected), size=(8, 8), mode="bilinear")
    out = build("score_cam").attribute(tiny_cnn, inputs, target, digits_seeds[:3])
    torch.testing.assert_close(out, expected.expand_as(inputs), rtol=1e-5, atol=1e-6)
    # chunked passes (3 copies each) give the same map
    monkeypatch.setitem(score_cam_module.PASS_ELEMENTS, "cpu", 3 * inputs[0].numel())
    chunked = build("score_cam").attribute(tiny_cnn, inputs, target, digits_seeds[:3])
    torch.testing.assert_close(chunked, out, rtol=1e-5, atol=1e-7)


def rank_one_model(weights: torch.Tensor) -> nn.Module:
    """A 1x1 conv from one channel: activation k = w_k x + b_k, a rank-one matrix once centred."""
    conv = nn.Conv2d(1, len(weights), 1)
    with torch.no_grad():
        conv.weight.copy_(weights.view(-1, 1, 1, 1))
        conv.bias.uniform_(-1, 1)
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(len(weights) * SIZE * SIZE, 2)).eval()


def test_eigen_cam_of_a_rank_one_layer_is_the_centred_input():
    """Centred over positions the activations are (x - mean x) w^T, so the first component is
    w / |w| and the projection is (x - mean x) |w|; the sign rule keeps it as is (sum w > 0)."""
    weights = torch.tensor([0.5, 1.0, -0.2, 2.0])
    model = rank_one_model(weights)
    inputs = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    out = build("eigen_cam").attribute(model, inputs, torch.zeros(3, dtype=torch.long), seeds_for(3))
    centred = inputs - inputs.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, torch.relu(centred) * weights.norm(), rtol=1e-4, atol=1e-5)
    # flipped weights: the layer is most active where x is low, and the sign rule follows it
    flipped = build("eigen_cam").attribute(
        rank_one_model(-weights), inputs, torch.zeros(3, dtype=torch.long), seeds_for(3)
    )
    torch.testing.assert_close(flipped, torch.relu(-centred) * weights.norm(), rtol=1e-4, atol=1e-5)


def test_gradient_free_cams_reject_a_model_without_conv_layers():
    for name in ("score_cam", "eigen_cam"):
        with pytest.raises(IncompatibleError, match="Conv2d"):
            build(name).check(region_model())


# ---- RISE -------------------------------------------------------------------------------------


class ConstantModel(nn.Module):
    def forward(self, x):
        return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)


def test_rise_of_a_constant_model_is_the_constant_probability():
    """E[M] = p, so sum_i c M_i / (N p) -> c at every pixel."""
    inputs = torch.rand(2, 1, SIZE, SIZE)
    out = build("rise", n_masks=2000).attribute(ConstantModel(), inputs, torch.tensor([1, 0]), seeds_for(2))
    c = torch.tensor([1.0, 0.0]).softmax(0)
    assert (out[0] - c[0]).abs().mean() < 0.03 and (out[1] - c[1]).abs().mean() < 0.03


def test_rise_finds_the_region_and_is_seeded_per_item():
    model = region_model()
    images = two_squares(2)
    target = torch.zeros(2, dtype=torch.long)
    out = build("rise").attribute(model, images, target, seeds_for(2))
    for saliency in out:
        assert saliency[:, REGION].mean() > saliency[:, DISTRACTOR].mean() + 0.05
        assert iou_of_top(saliency, REGION) >= 0.45
    # the masks come from the item's seed
    assert not torch.equal(out[0], out[1])
    again = build("rise").attribute(model, images[1:], target[1:], seeds_for(2)[1:])
    assert torch.equal(again[0], out[1])


# ---- XRAI -------------------------------------------------------------------------------------


def test_xrai_greedy_selection_by_density():
    """Three regions: B has the highest density, then A's pixels not in B, then the rest."""
    attribution = np.array([1.0, 1.0, 3.0, 3.0, 0.0, -1.0])
    a = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    b = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    tiny = np.array([0, 0, 0, 0, 1, 0], dtype=bool)  # adds too few pixels once min_pixel_diff is 2
    chosen = xrai_regions(attribution, np.stack([a, b, tiny]), min_pixel_diff=2)
    assert [region.tolist() for region, _ in chosen] == [
        b.tolist(),
        [True, True, False, False, False, False],
        [False, False, False, False, True, True],
    ]
    assert [gain for _, gain in chosen] == pytest.approx([3.0, 1.0, -0.5])


def test_xrai_ranks_the_region_the_model_uses_first():
    model = region_model()
    images = two_squares(2)
    out = build("xrai").attribute(model, images, torch.zeros(2, dtype=torch.long), seeds_for(2))
    for saliency in out:
        # every pixel of the region is ranked above every other pixel
        assert saliency[0][REGION].min() > saliency[0][~REGION].max()
        assert saliency.max() == 1.0
    gain = build("xrai", output="gain").attribute(model, images, torch.zeros(2, dtype=torch.long), seeds_for(2))
    top = gain.flatten(1).amax(1)
    assert (gain[:, 0][:, REGION] == top[:, None]).all() and (top > 0).all()


# ---- every new method: cost stays small -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_new_methods_are_registered(name):
    assert name in registry.names("method")
