"""The RLE hardware-efficiency metric and collapse detector (pure NumPy/pandas).

Specification: ``docs/rle-metric.md`` (formula §2.1, ``default`` profile §2.8/§4.4, legacy
profiles §2-§4, config keys §10, reference vectors §11).

Batch::

    out = rle.metric.compute(frame, device="gpu_0", profile="default", rated_w=300, limit_c=87)
    events = rle.metric.collapse_events(out)
    summary = rle.metric.collapse_summary(out)   # collapse_events, collapse_seconds, collapse_fraction

Incremental (live sampler, one state per device)::

    state = rle.metric.init_state("gpu_0", "default")
    state, point = rle.metric.update(state, {"timestamp": t, "util_pct": u, "temp_c": T,
                                             "power_w": P, "rated_w": limit_w, "limit_c": slowdown_c})

Profiles are frozen dataclasses (:func:`get_profile`, :func:`profile_from_config`); overrides use
the ``telemetry.rle`` keys, e.g. ``get_profile("default", **{"collapse.drop_frac": 0.7})``.

This package never imports MLflow, Hydra, Lightning or torch.
"""

from __future__ import annotations

from rle.metric.batch import OUTPUT_COLUMNS, compute
from rle.metric.collapse import EVENT_COLUMNS, collapse_events, collapse_summary
from rle.metric.profiles import (
    PROFILE_NAMES,
    CollapseParams,
    EvidenceParams,
    GateParams,
    LoadParams,
    NormCurve,
    NormParams,
    PerDevice,
    Profile,
    SmoothParams,
    StabilityParams,
    ThermalParams,
    device_kind,
    flatten_overrides,
    get_profile,
    profile_from_config,
    profile_keys,
)
from rle.metric.stream import (
    DefaultState,
    LegacyV03State,
    LegacyV2State,
    Point,
    RLEStream,
    StreamState,
    init_state,
    run_stream,
    update,
)

__all__ = [
    "EVENT_COLUMNS",
    "OUTPUT_COLUMNS",
    "PROFILE_NAMES",
    "CollapseParams",
    "DefaultState",
    "EvidenceParams",
    "GateParams",
    "LegacyV03State",
    "LegacyV2State",
    "LoadParams",
    "NormCurve",
    "NormParams",
    "PerDevice",
    "Point",
    "Profile",
    "RLEStream",
    "SmoothParams",
    "StabilityParams",
    "StreamState",
    "ThermalParams",
    "collapse_events",
    "collapse_summary",
    "compute",
    "device_kind",
    "flatten_overrides",
    "get_profile",
    "init_state",
    "profile_from_config",
    "profile_keys",
    "run_stream",
    "update",
]
