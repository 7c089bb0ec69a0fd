"""Markers for tests that need hardware; they skip visibly (``-ra``) instead of returning early."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

_F = TypeVar("_F", bound=Callable[..., object])


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def requires_gpu(fn: _F) -> _F:
    """Mark a test ``gpu`` and skip it, with a reason, when no CUDA GPU is available."""
    fn = pytest.mark.gpu(fn)
    return pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")(fn)
