"""Writer recovery from state continuity (rle.importers.rle_lab): shared timestamps, no false splits.

Two monitors appending to one file are told apart by each one's own state (its last raws
predict its ``rle_smoothed``, its last utilisations its σ), not by timing alone: rows of two
writers with identical timestamps are paired correctly, and a single writer is never split, even
when its values repeat with a short period.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rle_lab_writers as W

from rle.importers.recompute import recompute_files
from rle.importers.rle_lab import ParsedFile, read_monitor_csv


def _writer_lines(
    fmt: str, n: int, *, seed: int, start: dt.datetime = W.T0, cpu: bool = True
) -> list[str]:
    g = W.simulate_inputs(n, device="gpu", seed=seed, start=start, period_s=1.0)
    c = (
        W.simulate_inputs(n, device="cpu", seed=seed + 100, start=start, period_s=1.0)
        if cpu
        else None
    )
    rows = W.v03_rows(g, c) if fmt == "v03" else W.v2_rows(c, g)
    return W.to_lines(rows)


def _write(path: Path, fmt: str, lines: list[str]) -> Path:
    return W.write_lines(path, [W.header(fmt), *lines])


def _disagreements(pf: ParsedFile) -> list[str]:
    """``file#segment/device:column`` for every recomputed column with rows out of tolerance."""
    out = []
    for (_, seg, dev), rc in recompute_files([pf]).items():
        t = rc.agreement
        for col in t.loc[t["rows_within_tolerance"] < t["rows_compared"], "column"]:
            out.append(f"{seg}/{dev}:{col}")
    return out


def _timestamps(lines: list[str]) -> set[str]:
    return {ln.split(",", 1)[0] for ln in lines}


@pytest.mark.parametrize("fmt", ["v03", "v2"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_two_writers_with_identical_timestamps_are_recovered(
    tmp_path: Path, fmt: str, seed: int
) -> None:
    a = _writer_lines(fmt, 60, seed=10 + seed)
    b = _writer_lines(fmt, 40, seed=50 + seed, start=W.T0 + dt.timedelta(seconds=12))
    assert len(_timestamps(a) & _timestamps(b)) == 40  # every row of b shares a's timestamp
    mixed = W.interleave_shared(a, b, seed=seed)
    assert mixed != W.interleave(a, b)  # some ticks have the other writer's row in between
    pf = read_monitor_csv(_write(tmp_path / "rle_20251028_08.csv", fmt, mixed))

    assert pf.flags.get("interleaved_writers") == "2"
    assert "restarts" not in pf.flags
    assert [(s.writer, s.start_reason, s.starts_fresh) for s in pf.segments] == [
        (0, "file_start", True),
        (1, "new_writer", True),
    ]
    for seg, alone in zip(pf.segments, (a, b), strict=True):
        ref = read_monitor_csv(_write(tmp_path / f"alone_{seg.index}.csv", fmt, alone)).segments[0]
        assert set(seg.streams) == set(ref.streams)
        for dev in ref.streams:
            pd.testing.assert_frame_equal(
                seg.streams[dev].frame.drop(columns="line_no"),
                ref.streams[dev].frame.drop(columns="line_no"),
            )
    assert _disagreements(pf) == []  # each recovered writer recomputes to what it logged


def test_gpu_only_writers_with_identical_timestamps(tmp_path: Path) -> None:
    a = _writer_lines("v03", 50, seed=3, cpu=False)
    b = _writer_lines("v03", 30, seed=4, start=W.T0 + dt.timedelta(seconds=7), cpu=False)
    pf = read_monitor_csv(_write(tmp_path / "x.csv", "v03", W.interleave_shared(b, a, seed=5)))
    assert [s.n_samples for s in pf.segments] == [50, 30]
    assert pf.flags.get("interleaved_writers") == "2"
    assert _disagreements(pf) == []


# ------------------------------------------------------------------------------ single writers


def _periodic_v03(n: int, seed: int, *, cpu: bool) -> list[str]:
    g = W.periodic_inputs(W.simulate_inputs(n, device="gpu", seed=seed, period_s=1.0))
    c = (
        W.periodic_inputs(W.simulate_inputs(n, device="cpu", seed=seed + 1, period_s=1.0))
        if cpu
        else None
    )
    return W.to_lines(W.v03_rows(g, c))


def _periodic_v2_at_the_limit(n: int, seed: int) -> list[str]:
    """A v2 writer idling at the thermal limit every few samples: all-zero rows mid-stream."""
    g = W.simulate_inputs(n, device="gpu", seed=seed, period_s=1.0)
    g["util_pct"] = np.tile([0.0, 0.0, 70.0, 0.0, 0.0], n // 5 + 1)[:n]
    g["temp_c"] = np.tile([84.0, 84.0, 82.0, 84.0, 82.0], n // 5 + 1)[:n]
    g["power_w"] = np.round(60 + 1.3 * g["util_pct"], 2)
    c = W.periodic_inputs(W.simulate_inputs(n, device="cpu", seed=seed + 1, period_s=1.0))
    return W.to_lines(W.v2_rows(c, g))


@pytest.mark.parametrize(
    ("fmt", "make"),
    [
        ("v03", lambda: _periodic_v03(90, 1, cpu=True)),
        ("v03", lambda: _periodic_v03(90, 2, cpu=False)),
        (
            "v2",
            lambda: W.to_lines(
                W.v2_rows(
                    W.periodic_inputs(W.simulate_inputs(90, device="cpu", seed=4, period_s=1.0)),
                    W.periodic_inputs(W.simulate_inputs(90, device="gpu", seed=3, period_s=1.0)),
                )
            ),
        ),  # fmt: skip
        ("v2", lambda: _periodic_v2_at_the_limit(90, 5)),
    ],
    ids=["v03-both", "v03-gpu", "v2-both", "v2-all-zero-rows"],
)
def test_a_single_writer_with_a_5_sample_pattern_is_never_split(
    tmp_path: Path, fmt: str, make: object
) -> None:
    lines = make()  # type: ignore[operator]
    pf = read_monitor_csv(_write(tmp_path / "rle_20251028_08.csv", fmt, lines))
    assert len(pf.segments) == 1, [(s.writer, s.start_reason, s.n_samples) for s in pf.segments]
    assert pf.segments[0].n_samples == len(lines)
    assert "interleaved_writers" not in pf.flags
    assert "restarts" not in pf.flags
    assert _disagreements(pf) == []


def test_v2_all_zero_rows_mid_stream_are_start_lookalikes(tmp_path: Path) -> None:
    # The precondition of the case above: the writer really does log rows identical to a
    # monitor's first sample after it has warmed up (what used to be taken for a restart).
    lines = _periodic_v2_at_the_limit(90, 5)
    pf = read_monitor_csv(_write(tmp_path / "x.csv", "v2", lines))
    f = pf.segments[0].streams["gpu_0"].frame
    cols = ["rle_raw", "rle_smoothed", "E_th", "t_sustain_s", "rolling_peak"]
    zero = (f[cols] == 0.0).all(axis=1).to_numpy()
    warmed = np.maximum.accumulate(f["rolling_peak"].to_numpy()) > 0.0
    assert zero[0]
    assert (zero[1:] & warmed[:-1]).any()  # an all-zero row after the peak was positive


def test_a_real_v2_restart_is_still_a_restart(tmp_path: Path) -> None:
    first = _writer_lines("v2", 30, seed=7)
    second = _writer_lines("v2", 20, seed=8, start=W.T0 + dt.timedelta(seconds=33))
    pf = read_monitor_csv(_write(tmp_path / "x.csv", "v2", [*first, *second]))
    assert pf.flags.get("restarts") == "1"
    assert [(s.writer, s.start_reason, s.n_samples) for s in pf.segments] == [
        (0, "file_start", 60),
        (0, "restart", 40),
    ]
    assert _disagreements(pf) == []
