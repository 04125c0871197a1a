"""Cached layer activations: CAM methods on one layer share one forward pass to it.

The known answers: a method fed the cached activations gives the maps it computes on its own;
a second CAM method on a layer whose activations are cached sends no item through the layers
before it (counted by a global forward hook on the model's first convolution).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaibench import registry
from xaibench.activations import layer_activations, rest_of_network
from xaibench.manifest import parse
from xaibench.methods.cam import find_layer
from xaibench.runner import Runner
from xaibench.tasks import plan
from xaibench.work import execute

MANIFEST = """
name: activations-test
models: [digits_cnn]
datasets: [digits]
methods: [{methods}]
metrics: [deletion: {{steps: 4}}]
options: {{split: test, limit: 24, batch_size: 12, seeds: [0]}}
"""


@pytest.mark.parametrize("name", ["grad_cam", "score_cam", "eigen_cam"])
def test_cached_activations_give_the_maps_the_method_computes_alone(name, trained_digits_cnn, digits_batch):
    method = registry.build("method", name)
    inputs = digits_batch.inputs
    target = trained_digits_cnn(inputs).argmax(1)
    seeds = torch.zeros(len(inputs), dtype=torch.int64)
    alone = method.attribute(trained_digits_cnn, inputs, target, seeds)
    layer = find_layer(trained_digits_cnn, inputs, "", name)
    cached = layer_activations(trained_digits_cnn, layer, inputs)
    fed = method.attribute(trained_digits_cnn, inputs, target, seeds, activations=cached)
    assert alone.abs().sum() > 0
    torch.testing.assert_close(fed, alone, atol=1e-6, rtol=1e-5)


def test_the_forward_pass_that_fills_the_cache_stops_at_the_layer(trained_digits_cnn, digits_batch):
    layer = find_layer(trained_digits_cnn, digits_batch.inputs, "", "grad_cam")
    after = [m for m in trained_digits_cnn if isinstance(m, nn.Linear)]
    calls = []
    handles = [m.register_forward_hook(lambda *args: calls.append(1)) for m in after]
    try:
        values = layer_activations(trained_digits_cnn, layer, digits_batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [], "the head after the layer must not run"
    assert values.shape[0] == len(digits_batch.inputs) and values.dim() == 4


def test_grad_cam_without_a_callable_rest_recomputes_the_prefix(trained_digits_cnn, digits_batch):
    """A model that is not a chain of nn.Sequential (a wrapper class) has no 'rest of the
    network' to run: Grad-CAM ignores the activations there and still gives the same map."""

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    model = Wrapped(trained_digits_cnn).eval()
    inputs = digits_batch.inputs
    layer = find_layer(model, inputs, "", "grad_cam")
    assert rest_of_network(model, layer.name) is None
    assert rest_of_network(trained_digits_cnn, layer.name.removeprefix("inner.")) is not None
    method = registry.build("method", "grad_cam")
    target = model(inputs).argmax(1)
    seeds = torch.zeros(len(inputs), dtype=torch.int64)
    cached = layer_activations(model, layer, inputs)
    torch.testing.assert_close(
        method.attribute(model, inputs, target, seeds, activations=cached),
        method.attribute(model, inputs, target, seeds),
    )


def test_a_second_cam_method_does_no_forward_pass_up_to_the_layer(tmp_path, warm_cache):
    first = Runner(parse(MANIFEST.format(methods="eigen_cam")), tmp_path / "results", cache=warm_cache)
    report = first.run()
    assert not report.failures
    assert report.counts.activation_items == 24

    second = Runner(parse(MANIFEST.format(methods="eigen_cam, grad_cam")), tmp_path / "results", cache=warm_cache)
    graph = plan(second.manifest, warm_cache, tmp_path / "results" / "activations-test")
    counts = graph.counts()
    assert counts["activations"] == {"total": 1, "todo": 0}, "plan counts the cached activations as done"
    assert counts["attribute"]["todo"] == 1 and graph.work()["activations"] == 0

    items_through_first_conv = []

    def count(module, args):
        if isinstance(module, nn.Conv2d) and module.in_channels == 1:
            items_through_first_conv.append(args[0].shape[0])

    handle = nn.modules.module.register_module_forward_pre_hook(count)
    try:
        summaries = [execute(task, second.context()) for task in graph.todo if task.kind in ("fit", "attribute")]
    finally:
        handle.remove()
    assert [s["error"] for s in summaries] == [None]
    assert summaries[0]["attributed_items"] == 24 and summaries[0]["activation_items"] == 0
    assert summaries[0]["forward_items"] == 0, "the logits are cached too"
    assert items_through_first_conv == [], "Grad-CAM ran only the layers after the cached one"
