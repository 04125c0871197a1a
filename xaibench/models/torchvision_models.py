"""Users' own networks: `torchvision` (any torchvision classifier with local weights) and `module`
(a factory function, a ``file.py:factory`` or a TorchScript file).

Nothing is downloaded: weights come from a local file. Neither model trains (no ``fit``); a model
without weights is refused unless ``weights: none`` asks for a random initialisation (tests,
benchmarks). The input normalisation goes inside the model (``Normalize`` first), so every
model takes inputs in [0, 1] and "black" is 0 for all of them. ``revision`` is the SHA-256 of
the weights file (remembered by path, size and mtime, see ``xaibench.filehash``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

from xaibench.errors import UserError
from xaibench.filehash import file_digest
from xaibench.registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")


def _normalized(net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Sequential:
    import torch
    from torch import nn

    from xaibench.models.layers import Normalize

    norm = Normalize(len(mean))
    norm.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
    norm.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    return nn.Sequential(norm, net)


def _read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict from a file, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` and DataParallel's
    ``module.`` prefix."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{where}: cannot read weights {path}: {type(error).__name__}: {error}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{where}: {path} holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights(net: nn.Module, path: Path, where: str) -> None:
    """Load a state dict strictly; a mismatch is one line naming the first differences."""
    state = _read_state_dict(path, where)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} shape mismatch(es), e.g. {k}: file {list(state[k].shape)}, model {list(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        summary = "; ".join(parts)
        raise UserError(f"{where}: weights {path} do not fit the model: {summary} (check arch and num_classes)")
    net.load_state_dict(state)


def _existing_file(spec: str, what: str, where: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"{where}: {what} file not found: {path.resolve()}")
    return path


def _no_zero_weights(net: nn.Module, seed: int) -> None:
    """Give all-zero weight matrices (torchvision zero-initialises the ViT head) a small normal
    init, so a randomly initialised model's output depends on its input and gradients are not 0."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)


def _plain_relus(net: nn.Module) -> None:
    """In-place ReLUs become out-of-place (same values): captum's backward hooks (guided
    backprop, deconvolution, DeepLift) fail on in-place outputs."""
    from torch import nn

    for module in net.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)) and getattr(module, "inplace", False):
            module.inplace = False


def unshare_activations(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in which every activation module is called once per forward pass.

    torchvision's ResNet blocks call one ``self.relu`` twice; DeepLift (and any method that
    keeps per-module state) then fails or mixes the two calls. The network is traced with
    torch.fx and each extra call gets its own copy (``layer1.0.relu_1``). Parameters and names
    are unchanged. A network that fx cannot trace is returned as it is.
    """
    import torch
    from torch import nn

    activations = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)
    try:
        traced = torch.fx.symbolic_trace(net)
    except Exception:
        return net
    seen: set[str] = set()
    changed = False
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(traced.get_submodule(node.target), activations):
            continue
        if node.target in seen:
            index = 1
            while f"{node.target}_{index}" in dict(traced.named_modules()):
                index += 1
            name = f"{node.target}_{index}"
            traced.add_submodule(name, copy.deepcopy(traced.get_submodule(node.target)))
            node.target = name
            changed = True
        seen.add(node.target)
    if not changed:
        return net
    traced.recompile()
    return traced


def _prepare(net: nn.Module) -> nn.Module:
    _plain_relus(net)
    return unshare_activations(net).eval()


@register("model", "torchvision")
@dataclass(frozen=True)
class TorchvisionModel:
    """Any torchvision classification architecture (``arch``: resnet18, vgg11_bn, vit_b_16, ...)
    with local weights; ImageNet normalisation inside the model by default.

    ``weights``: a state-dict file path; or a torchvision weights name such as
    ``ResNet18_Weights.IMAGENET1K_V1``, read from ``$TORCH_HOME/hub/checkpoints`` under the
    file name of its download URL (never downloaded: an absent file is one error naming the file
    and the folder); or ``none`` for a seeded random initialisation (tests only). ``num_classes``
    must match the weights; ``input_size`` is the square side the model expects (ViTs check it).
    Cost: building reads the weights once per process.
    """

    version: ClassVar[str] = "1"
    arch: str = ""
    weights: str = ""
    num_classes: int = 1000
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    seed: int = 0

    def __post_init__(self):
        if not self.arch:
            raise ValueError("give arch, a torchvision classification model name such as resnet18")
        if not self.weights:
            raise ValueError(
                "no weights: give weights as a state-dict file, a torchvision weights name such as "
                "ResNet18_Weights.IMAGENET1K_V1 (read from $TORCH_HOME/hub/checkpoints), or `none` for a "
                "random initialisation (tests only)"
            )
        if self.num_classes < 1 or self.input_size < 8:
            raise ValueError("num_classes must be at least 1 and input_size at least 8")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need one value per channel, and std > 0")

    @property
    def _where(self) -> str:
        return f"model torchvision ({self.arch})"

    def weights_file(self) -> Path | None:
        """The local weights file (None for ``weights: none``); a UserError when it is absent."""
        import torch

        if self.weights.lower() == "none":
            return None
        if _WEIGHTS_NAME.match(self.weights) and not Path(self.weights).exists():
            from torchvision.models import get_weight

            try:
                url = get_weight(self.weights).url
            except Exception:
                raise UserError(f"{self._where}: unknown torchvision weights name {self.weights!r}") from None
            folder = Path(torch.hub.get_dir()) / "checkpoints"
            path = folder / url.rsplit("/", 1)[-1]
            if not path.is_file():
                raise UserError(
                    f"{self._where}: weights {self.weights} need the file {path.name} in {folder} "
                    f"(xaibench never downloads; fetch {url} elsewhere and copy it there, or set TORCH_HOME)"
                )
            return path
        return _existing_file(self.weights, "weights", self._where)

    @property
    def revision(self) -> str:
        path = self.weights_file()
        return f"random-init-seed{self.seed}" if path is None else f"sha256:{file_digest(path)}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (len(self.mean), self.input_size, self.input_size)

    def build(self) -> nn.Module:
        import torch
        from torchvision import models

        available = models.list_models(module=models)
        if self.arch not in available:
            close = difflib.get_close_matches(self.arch, available, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (see torchvision.models.list_models())"
            raise UserError(f"model torchvision: unknown arch {self.arch!r}{hint}")
        path = self.weights_file()
        extra = {"image_size": self.input_size} if self.arch.startswith("vit_") else {}
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(self.seed)
            net = models.get_model(self.arch, weights=None, num_classes=self.num_classes, **extra)
        if path is None:
            _no_zero_weights(net, self.seed)
        else:
            load_weights(net, path, self._where)
        return _normalized(_prepare(net), self.mean, self.std).eval()


def _import_factory(spec: str, where: str):
    """The callable named by ``package.module:attr`` or ``path/file.py:attr``."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UserError(f"{where}: give factory as package.module:function, path/file.py:function or a .pt file")
    if target.endswith(".py"):
        path = _existing_file(target, "factory", where).resolve()
        name = f"xaibench_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if name not in sys.modules:
            spec_ = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec_)
            try:
                spec_.loader.exec_module(module)
            except Exception as error:
                raise UserError(f"{where}: importing {path} failed: {type(error).__name__}: {error}") from None
            sys.modules[name] = module
        module = sys.modules[name]
    else:
        try:
            module = importlib.import_module(target)
        except Exception as error:
            raise UserError(f"{where}: cannot import {target!r} ({type(error).__name__}: {error})") from None
    if not callable(getattr(module, attr, None)):
        raise UserError(f"{where}: {target} has no function {attr!r}")
    return getattr(module, attr)


def _source_file(spec: str) -> Path | None:
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        return Path(target)
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin and found.origin.endswith(".py") else None


@register("model", "module")
@dataclass(frozen=True)
class ModuleModel:
    """A network of one's own: ``factory`` is ``package.module:function`` or ``path/file.py:function``
    (called with no arguments, returns an nn.Module), or a TorchScript file (``.pt``/``.pth``,
    loaded with ``torch.jit.load``).

    ``weights``: an optional state-dict file loaded into the factory's module. ``input_shape``:
    (C, H, W) the network takes. ``mean``/``std``: a normalisation placed in front of the network
    (none by default: the network then receives inputs in [0, 1]). Layer methods (Grad-CAM) and
    hook-based methods cannot see inside a TorchScript model; ``check`` refuses them.
    ``revision`` hashes the factory's source file, the TorchScript file and the weights file.
    """

    version: ClassVar[str] = "1"
    factory: str = ""
    weights: str = ""
    input_shape: tuple[int, ...] = (3, 224, 224)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.factory:
            raise ValueError("give factory: package.module:function, path/file.py:function or a TorchScript .pt file")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be [C, H, W], got {list(self.input_shape)}")
        if len(self.mean) != len(self.std) or (self.mean and len(self.mean) != self.input_shape[0]):
            raise ValueError("mean and std need one value per input channel (or neither)")

    @property
    def _where(self) -> str:
        return f"model module ({self.factory})"

    @property
    def _is_script(self) -> bool:
        return self.factory.endswith((".pt", ".pth", ".ts")) and ":" not in Path(self.factory).name

    @property
    def revision(self) -> str:
        files = []
        if self._is_script:
            files.append(_existing_file(self.factory, "TorchScript", self._where))
        else:
            source = _source_file(self.factory)
            if source is not None and source.is_file():
                files.append(source)
        if self.weights:
            files.append(_existing_file(self.weights, "weights", self._where))
        return "sha256:" + hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()

    def build(self) -> nn.Module:
        import torch
        from torch import nn

        if self._is_script:
            path = _existing_file(self.factory, "TorchScript", self._where)
            try:
                net = torch.jit.load(str(path), map_location="cpu")
            except Exception as error:
                raise UserError(f"{self._where}: cannot load TorchScript {path}: {error}") from None
        else:
            net = _import_factory(self.factory, self._where)()
            if not isinstance(net, nn.Module):
                raise UserError(f"{self._where}: the factory returned a {type(net).__name__}, not an nn.Module")
            _plain_relus(net)
        if self.weights:
            load_weights(net, _existing_file(self.weights, "weights", self._where), self._where)
        net = net.eval() if self._is_script else unshare_activations(net).eval()
        return _normalized(net, self.mean, self.std).eval() if self.mean else net
