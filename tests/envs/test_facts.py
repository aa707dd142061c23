"""The CUDA/driver table and channel limits tk tells users about."""

from __future__ import annotations

import pytest

from toolkit.envs import facts
from toolkit.envs.errors import VariantRefused
from toolkit.errors import UsageError


@pytest.mark.parametrize(
    ("cuda", "driver", "status"),
    [
        ("11.8", "520.61.05", "ok"),
        ("11.8", "470.182.03", "compat"),  # minor-version compatibility from 450.80.02
        ("11.8", "450.80.01", "too_old"),
        ("12.1", "530.30.02", "ok"),
        ("12.1", "470.182.03", "too_old"),
        ("12.4", "535.183.01", "compat"),  # 12.x from 525.60.13, with limits
        ("12.4", "550.54.14", "ok"),
        ("12.6", "560.28.03", "ok"),
        ("12.8", "570.26", "ok"),
        ("12.8", "570.25.99", "compat"),
        ("13.0", "580.159.03", "ok"),
        ("13.0", "575.51.03", "too_old"),
    ],
)
def test_driver_verdicts_follow_nvidias_table(cuda: str, driver: str, status: str) -> None:
    assert facts.driver_verdict(cuda, driver).status == status


def test_too_old_message_names_both_minimums() -> None:
    v = facts.driver_verdict("12.4", "470.182.03")
    assert "550.54.14" in v.message and "525.60.13" in v.message


def test_best_cuda_prefers_full_support_over_compatibility() -> None:
    prefs = ["12.8", "12.6", "12.4", "11.8"]
    assert facts.best_cuda_for_driver(prefs, "580.159.03") == ("12.8", "ok")
    assert facts.best_cuda_for_driver(prefs, "535.183.01") == ("11.8", "ok")
    assert facts.best_cuda_for_driver(prefs, "470.182.03") == ("11.8", "compat")
    assert facts.best_cuda_for_driver(prefs, "418.67") == (None, "too_old")


@pytest.mark.parametrize("text", ["12", "12.4.1", "cuda12", ""])
def test_bad_cuda_versions_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match=r"must look like 12\.4"):
        facts.parse_cuda(text)


@pytest.mark.parametrize("text", ["9.9", "1.2", "10.2", "12.123"])
def test_unknown_cuda_versions_say_so_and_list_the_known_ones(text: str) -> None:
    with pytest.raises(UsageError, match=rf"unknown CUDA version {text}: not supported") as exc:
        facts.parse_cuda(text)
    assert "11.8" in (exc.value.fix or "") and "12.4" in (exc.value.fix or "")


def test_cuda_version_is_normalised() -> None:
    assert facts.parse_cuda(" 12.04 ") == "12.4"


def test_legacy_channel_stops_at_12_4() -> None:
    assert facts.check_channel_limits("pytorch", "12.4", None) == []
    with pytest.raises(VariantRefused, match=r"12\.4") as exc:
        facts.check_channel_limits("pytorch", "12.8", None)
    assert "conda-forge" in (exc.value.fix or "")


def test_conda_forge_cuda_118_stops_at_pytorch_251() -> None:
    notes = facts.check_channel_limits("conda-forge", "11.8", ">=2.1")
    assert "2.5.1" in notes[0]
    with pytest.raises(VariantRefused, match=r"2\.5\.1") as exc:
        facts.check_channel_limits("conda-forge", "11.8", ">=2.6")
    assert "pytorch<=2.5.1" in (exc.value.fix or "")
    assert facts.check_channel_limits("conda-forge", "12.8", ">=2.6") == []


@pytest.mark.parametrize(
    ("spec", "low"),
    [(">=2.6", "2.6"), ("==2.7.1", "2.7.1"), ("2.5.*", "2.5"), ("<2.6", None), ("*", None),
     (None, None), (">=2.6 cuda*", "2.6"), ("2.4|2.5", None)],
)  # fmt: skip
def test_lower_bound(spec: str | None, low: str | None) -> None:
    assert facts.lower_bound(spec) == low
