"""The model registry: the default model, torchvision + weights files, TorchScript."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.serve.stack import jpeg
from toolkit.errors import UsageError
from toolkit.serve import models
from toolkit.serve.images import load_rgb

pytestmark = pytest.mark.slow


def _photo(name: str) -> np.ndarray:
    arr: np.ndarray = load_rgb(jpeg(name), 224, 256, 10**7)
    return arr


def test_default_model_is_right_offline_eager_and_traced() -> None:
    cat, coffee = _photo("chelsea.png"), _photo("coffee.png")
    for how in ("eager", "trace"):
        m = models.load("efficientnet-lite0", "cpu", how)
        assert m.optimized == ("eager" if how == "eager" else "channels_last+trace+freeze")
        top = m.predict([cat, coffee, cat], 3)
        assert top[0][0].index in range(281, 286) and top[2][0].index in range(281, 286)
        assert top[1][0].index in (967, 968) and top[1][0].label in ("espresso", "cup")
        assert len(top[0]) == 3 and 0 < top[0][0].score <= 1
    assert m.version == "efficientnet-lite0-57934424"


def test_torchvision_state_dict_whole_pickle_and_torchscript(tmp_path: Path) -> None:
    import torch
    import torchvision  # type: ignore[import-untyped]

    net = torchvision.models.squeezenet1_1(weights=None).eval()
    sd, whole, ts = tmp_path / "sd.pth", tmp_path / "whole.pth", tmp_path / "m.pt"
    torch.save(net.state_dict(), sd)
    torch.save(net, whole)  # what the original recipe did with resnet50.pth
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # jit.trace is deprecated in torch 2.14
        traced = torch.jit.trace(net, torch.zeros(1, 3, 224, 224))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(ts))
    img = _photo("coffee.png")
    expected = models.load(f"torchvision:squeezenet1_1={sd}", "cpu", "eager").predict([img], 5)
    for spec in (f"torchvision:squeezenet1_1={sd}", f"torchscript:{ts}"):
        m = models.load(spec, "cpu", "trace")
        got = m.predict([img, img], 5)
        assert [p.index for p in got[0]] == [p.index for p in expected[0]], spec
        assert len(m.version) == 8
    with pytest.warns(UserWarning, match="whole pickled model"):
        m = models.load(f"torchvision:squeezenet1_1={whole}", "cpu", "eager")
    assert [p.index for p in m.predict([img], 5)[0]] == [p.index for p in expected[0]]
    with pytest.raises(models.ModelError, match="not found"):
        models.load(f"torchvision:resnet50={tmp_path / 'missing.pth'}", "cpu")
    with pytest.raises(UsageError, match="no architecture"):
        models.load(f"torchvision:nosuchnet={sd}", "cpu")
