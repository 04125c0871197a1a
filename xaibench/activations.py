"""A CAM method's layer activations: computed once per (fitted model, data, layer), cached by item.

Grad-CAM, Score-CAM and Eigen-CAM all start from the output of the same layer (``cam.find_layer``:
the last module with a spatial output, or a named one). Running several of them on one model
used to repeat the forward pass up to that layer for each; now an ``activations`` task computes
it once per item window, stores it in the cache (kind ``activations``, key
``keys.activation_key``), and each method reads it:
- Eigen-CAM needs nothing else: no forward pass at all.
- Score-CAM skips its unmasked pass; its masked passes are the method itself.
- Grad-CAM runs only the part of the network after the layer, from the cached tensor, and
  back-propagates through that part, when the model is a chain of ``nn.Sequential`` containers
  down to the layer (every built-in CNN). Any other model (a torchvision ResNet) has no
  "rest of the network" to call, so Grad-CAM recomputes the prefix there.

The forward pass that fills the cache stops at the layer (the hook raises), so the layers after
it are never run. Activations of a randomised model (sanity checks) are never cached: their
weights are drawn inside the metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from xaibench.methods.cam import CamLayer

# The version of ``find_layer``'s automatic rule: part of the key of automatically chosen layers.
AUTO_LAYER_RULE = "auto:2"


def reads_layer(method: Any) -> bool:
    return bool(getattr(type(method), "reads_layer", False))


def layer_spec(method: Any) -> str:
    """The layer a method reads, as it goes into the key: its name, or the automatic rule's version."""
    return method.layer or AUTO_LAYER_RULE


class _Reached(Exception):
    """Raised by the hook once the layer's output is captured: the rest of the model is not run."""


def layer_activations(model: nn.Module, layer: nn.Module | CamLayer, inputs: Tensor, stop: bool = True) -> Tensor:
    """The output of ``layer`` for ``inputs`` (no gradients) as (B, K, h, w); a ``CamLayer``'s
    token sequence is reshaped to its grid. With ``stop``, the forward pass ends at the layer."""
    import torch

    from xaibench.methods.cam import CamLayer

    found = layer if isinstance(layer, CamLayer) else CamLayer("", layer)
    captured: list[Tensor] = []

    def capture(module, args, output):
        captured.append(output.detach())
        if stop:
            raise _Reached

    handle = found.module.register_forward_hook(capture)
    try:
        with torch.no_grad():
            model(inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    return found.as_map(captured[0])


def rest_of_network(model: nn.Module, layer_name: str):
    """A callable mapping the layer's output to the model's output, or None when the model is
    not a chain of ``nn.Sequential`` containers down to the layer."""
    from torch import nn

    if not layer_name or not isinstance(model, nn.Sequential):
        return None
    head, _, tail = layer_name.partition(".")
    if head not in model._modules:
        return None
    children = list(model._modules)
    after = nn.Sequential(*[model._modules[name] for name in children[children.index(head) + 1 :]])
    if not tail:
        return after
    inner = rest_of_network(model._modules[head], tail)
    if inner is None:
        return None
    return lambda activation: after(inner(activation))
