"""Variant rendering (both channel styles) and picking, as pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.envs import gpu, spec, variants
from toolkit.envs.errors import VariantRefused
from toolkit.envs.variants import Variant

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
CF = spec.load(ROOT / "envs/inference.yml")
LEGACY = spec.load(ROOT / "envs/examples/inference-pytorch-channel.yml")


def probe(name: str) -> gpu.GpuProbe:
    return gpu.parse_query_csv((DATA / name).read_text())


@pytest.mark.parametrize("cuda", ["11.8", "12.1", "12.4", "12.8"])
def test_conda_forge_cuda_variants(cuda: str) -> None:
    r = variants.render(CF, Variant("cuda", cuda))
    assert "pytorch >=2.1 cuda*" in r.conda
    assert f"cuda-version={cuda}" in r.conda
    assert "pytorch>=2.1" not in r.conda
    assert r.virtual_packages == {"__cuda": cuda}
    assert r.channels == ("conda-forge",)
    assert r.pip == ("-e ..",)


def test_conda_forge_cpu_variant() -> None:
    r = variants.render(CF, Variant("cpu"))
    assert "pytorch >=2.1 cpu*" in r.conda
    assert not any(d.startswith("cuda-version") for d in r.conda)
    assert r.virtual_packages == {}


@pytest.mark.parametrize("cuda", ["11.8", "12.1", "12.4"])
def test_legacy_cuda_variants(cuda: str) -> None:
    r = variants.render(LEGACY, Variant("cuda", cuda))
    assert f"pytorch-cuda={cuda}" in r.conda
    assert "cpuonly" not in r.conda
    assert r.channels[:2] == ("pytorch", "nvidia")


def test_legacy_cpu_variant_and_12_8_refused() -> None:
    assert "cpuonly" in variants.render(LEGACY, Variant("cpu")).conda
    with pytest.raises(VariantRefused, match="pytorch-cuda metapackage") as exc:
        variants.choose(LEGACY, "12.8", False, None)
    assert "--cuda 12.4" in (exc.value.fix or "")


def test_spec_hash_changes_with_the_variant_and_spec() -> None:
    hashes = {variants.render(CF, v).spec_hash() for v in
              (Variant("cpu"), Variant("cuda", "12.4"), Variant("cuda", "12.8"))}  # fmt: skip
    assert len(hashes) == 3
    again = variants.render(CF, Variant("cuda", "12.4")).spec_hash()
    assert again in hashes


def test_channel_flag_replaces_spec_channels() -> None:
    r = variants.render(LEGACY, Variant("cuda", "12.1"), channels=("file:///srv/mirror",))
    assert r.channels == ("file:///srv/mirror",)


def test_remove_rule(tmp_path: Path) -> None:
    p = tmp_path / "s.yml"
    p.write_text(
        "name: s\nchannels: [c]\ndependencies: [python=3.11, pytorch, triton]\n"
        "x-tk:\n  variants:\n    cpu: {remove: [triton]}\n"
    )
    assert variants.render(spec.load(p), Variant("cpu")).conda == ("python=3.11", "pytorch")


def test_merge_keeps_the_base_version() -> None:
    assert variants.merge("pytorch=2.5", "pytorch=*=cpu*") == "pytorch 2.5.* cpu*"
    assert variants.merge("pytorch", "pytorch=*=cuda*") == "pytorch=*=cuda*"
    assert variants.merge("pytorch=2.5.1", "pytorch=2.4=cuda*") == "pytorch=2.4=cuda*"


def test_render_yml_is_plain_conda() -> None:
    import yaml

    text = variants.environment_yml(variants.render(CF, Variant("cuda", "12.4")))
    assert "CONDA_OVERRIDE_CUDA=12.4" in text
    data = yaml.safe_load(text)
    assert set(data) == {"name", "channels", "dependencies"}
    assert data["dependencies"][-1] == {"pip": ["-e .."]}


def test_auto_pick_on_an_h200() -> None:
    c = variants.choose(CF, None, False, probe("smi_query_h200_580.csv"))
    assert c.variant == Variant("cuda", "12.8")
    assert "NVIDIA H200" in c.reason and "580.159.03" in c.reason


def test_auto_pick_on_a_470_driver_uses_compatibility() -> None:
    c = variants.choose(CF, None, False, probe("smi_query_a100_470.csv"))
    assert c.variant == Variant("cuda", "11.8")
    assert any("minor-version compatibility" in n for n in c.notes)
    assert any("2.5.1" in n for n in c.notes)


def test_auto_pick_without_gpu_is_cpu_and_says_why() -> None:
    c = variants.choose(CF, None, False, probe("smi_no_devices.txt"))
    assert c.variant == Variant("cpu")
    assert "no devices" in c.reason and "--cuda" in c.reason


def test_explicit_cuda_too_new_for_the_driver_is_refused() -> None:
    with pytest.raises(VariantRefused) as exc:
        variants.choose(CF, "12.4", False, probe("smi_query_a100_470.csv"))
    assert "550.54.14" in exc.value.message
    assert "--cuda 11.8" in (exc.value.fix or "")


def test_explicit_cuda_without_gpu_builds_anyway() -> None:
    c = variants.choose(CF, "12.4", False, probe("smi_no_devices.txt"))
    assert c.variant == Variant("cuda", "12.4")
    assert any("__cuda=12.4" in n for n in c.notes)


def test_cuda_and_cpu_together_are_refused() -> None:
    with pytest.raises(VariantRefused, match="not both"):
        variants.choose(CF, "12.4", True, None)


def test_variant_names_round_trip() -> None:
    assert Variant.parse("cuda-12.4") == Variant("cuda", "12.4")
    assert Variant.parse("cpu").name == "cpu"
    with pytest.raises(VariantRefused):
        Variant.parse("rocm-6")
