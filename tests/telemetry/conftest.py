"""Fixtures for telemetry tests: a fake clock, a fake NVML, fake sysfs trees."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from support.fake_nvml import FakeGpu, install_fake_nvml


class FakeClock:
    """Monotonic and wall clocks that only move when told; ``sleep``/``wait`` advance them."""

    def __init__(self, start_s: float = 1000.0, wall_offset_s: float = 1.7e9) -> None:
        self.now_s = start_s
        self.wall_offset_s = wall_offset_s
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now_s

    def wall(self) -> float:
        return self.now_s + self.wall_offset_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds

    def wait(self, timeout_s: float) -> bool:
        """Sampler wait: advance by the timeout; never asks the sampler to stop."""
        self.waits.append(timeout_s)
        self.now_s += timeout_s
        return False


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


NvmlInstaller = Callable[..., Any]


@pytest.fixture
def fake_nvml() -> Iterator[NvmlInstaller]:
    """Patch ``rle.telemetry.gpu.pynvml`` (autospec) and return ``install(*gpus, init_error=)``."""
    with patch("rle.telemetry.gpu.pynvml", autospec=True) as mock:

        def install(*gpus: FakeGpu, init_error: int | None = None) -> Any:
            install_fake_nvml(mock, gpus, init_error=init_error)
            return mock

        yield install


@pytest.fixture
def fake_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sequence[str]], None]:
    """Make ``import torch`` see CUDA devices with the given UUIDs (torch spelling, no prefix).

    Simulates what CUDA does after ``CUDA_VISIBLE_DEVICES``: ordinal ``i`` is the i-th visible
    physical device.
    """

    def install(uuids: Sequence[str]) -> None:
        cuda = types.SimpleNamespace(
            is_available=lambda: bool(uuids),
            device_count=lambda: len(uuids),
            get_device_properties=lambda i: types.SimpleNamespace(uuid=uuids[i]),
        )
        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))

    return install


def write_tree(root: Path, files: dict[str, str | int]) -> Path:
    """Create ``{relative_path: content}`` under ``root``; return ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{content}\n")
    return root


@pytest.fixture
def sysfs(tmp_path: Path) -> Callable[[dict[str, str | int]], Path]:
    """Build a fake sysfs tree: ``sysfs({"class/hwmon/hwmon0/name": "coretemp", ...})``."""

    def build(files: dict[str, str | int]) -> Path:
        return write_tree(tmp_path / "sys", files)

    return build
