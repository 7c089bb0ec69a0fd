"""Parsing of the RLE lab's formats (rle.importers.rle_lab): formats, damage, writers, restarts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rle_lab_writers as W

from rle.errors import ImportFormatError
from rle.importers.rle_lab import (
    V03_COLUMNS,
    V03_OLD_COLUMNS,
    V2_COLUMNS,
    detect_format,
    read_joint_session,
    read_monitor_csv,
)


def _v03_lines(
    n: int = 30, *, seed: int = 1, start: dt.datetime = W.T0, cpu: bool = True
) -> list[str]:
    g = W.simulate_inputs(n, device="gpu", seed=seed, start=start)
    c = W.simulate_inputs(n, device="cpu", seed=seed + 100, start=start) if cpu else None
    return W.to_lines(W.v03_rows(g, c))


def _write(tmp_path: Path, name: str, fmt: str, lines: list[str], **kw: object) -> Path:
    return W.write_lines(tmp_path / name, [W.header(fmt), *lines], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ formats


def test_detect_format_by_header() -> None:
    assert detect_format(V03_COLUMNS) == "v03"
    assert detect_format(V03_OLD_COLUMNS) == "v03_old"
    assert detect_format(V2_COLUMNS) == "v2"
    assert detect_format(["\ufefftimestamp", *V03_COLUMNS[1:]]) == "v03"
    assert detect_format(V03_COLUMNS[:-1]) is None


def test_unrecognised_file_names_file_and_expected_formats(tmp_path: Path) -> None:
    bad = tmp_path / "notes.csv"
    bad.write_text("time,value\n1,2\n")
    with pytest.raises(
        ImportFormatError, match=r"notes\.csv.*2 column.*expected the v0\.3 monitor header \(19"
    ):
        read_monitor_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFormatError, match=r"empty\.csv: the file is empty"):
        read_monitor_csv(empty)
    with pytest.raises(ImportFormatError, match="missing.csv: file not found"):
        read_monitor_csv(tmp_path / "missing.csv")


def test_clean_v03_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "rle_20251028_08.csv", "v03", _v03_lines(30))
    pf = read_monitor_csv(p)
    assert (pf.format, pf.source, pf.profile) == ("v03", "rle_lab_v03", "legacy_v03")
    assert pf.counts == {"repaired.short_gpu_row_padded": 30}
    assert len(pf.segments) == 1
    seg = pf.segments[0]
    assert seg.devices == ("gpu_0", "cpu")
    assert seg.starts_fresh
    assert seg.start_reason == "file_start"
    gpu, cpu = seg.streams["gpu_0"], seg.streams["cpu"]
    assert gpu.n_samples == cpu.n_samples == 30
    assert str(gpu.frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert gpu.frame["timestamp"].iloc[0] == pd.Timestamp("2025-10-28T08:00:00.408689Z")
    assert gpu.frame["sample_index"].tolist() == list(range(30))
    assert np.isnan(gpu.frame["cpu_freq_ghz"]).all()  # padded GPU rows
    assert cpu.frame["cpu_freq_ghz"].eq(2.496).all()
    assert (gpu.power_source, gpu.temp_source, gpu.rated_w) == ("nvml", "nvml", 200.0)
    assert (cpu.power_source, cpu.temp_source, cpu.rated_w) == ("estimated", "none", 125.0)
    assert not cpu.exclude_from_aggregates
    assert pf.flags["file_name_utc_offset_hours"] == "0"  # v0.3 names use the UTC hour
    assert len(pf.content_sha256) == 64


def test_inferred_rated_power(tmp_path: Path) -> None:
    g = W.simulate_inputs(20, device="gpu", seed=3)
    p = W.write_monitor_csv(
        tmp_path / "rle_20251028_08.csv", "v03", W.v03_rows(g, None, rated_gpu_w=240.0)
    )
    stream = read_monitor_csv(p).segments[0].streams["gpu_0"]
    assert (stream.rated_w, stream.rated_w_source) == (240.0, "inferred")


def test_old_v03_build_cpu_alpha_zero(tmp_path: Path) -> None:
    g = W.simulate_inputs(12, device="gpu", seed=1)
    c = W.simulate_inputs(12, device="cpu", seed=2)
    p = W.write_monitor_csv(tmp_path / "rle_20251028_08.csv", "v03_old", W.v03_rows(g, c, old=True))
    pf = read_monitor_csv(p)
    assert (pf.format, pf.source) == ("v03_old", "rle_lab_v03_old")
    assert pf.counts == {}  # 16 values in every row
    cpu = pf.segments[0].streams["cpu"]
    assert (cpu.power_source, cpu.exclude_from_aggregates) == ("none", True)
    assert cpu.frame["E_pw"].iloc[5] > 1.0  # η / 1e-3: the α = 0 artefact


def test_v2_file_placeholders_metadata_and_local_file_name(tmp_path: Path) -> None:
    # Recorded 08:00 UTC, named after the local hour 03 (UTC-5).
    g = W.simulate_inputs(10, device="gpu", seed=1, period_s=1.0)
    c = W.simulate_inputs(10, device="cpu", seed=2, period_s=1.0)
    p = W.write_monitor_csv(
        tmp_path / "rle_enhanced_20251028_03.csv", "v2", W.v2_rows(c, g), eol="\n"
    )
    (tmp_path / "rle_enhanced_20251028_03_metadata.json").write_text(
        json.dumps({"session_start": "2025-10-28T03:00:00", "monitoring": {"sample_hz": 0.001}})
    )
    pf = read_monitor_csv(p)
    assert (pf.format, pf.source, pf.profile) == ("v2", "rle_lab_v2", "legacy_v2")
    assert pf.counts == {}  # naive timestamps are the v2 norm: not a repair
    seg = pf.segments[0]
    assert seg.starts_fresh  # the first v2 row is all zeros
    cpu, gpu = seg.streams["cpu"], seg.streams["gpu_0"]
    assert (cpu.power_source, cpu.temp_source) == ("placeholder", "placeholder")
    assert (gpu.power_source, gpu.temp_source) == ("nvml", "nvml")
    assert gpu.frame["timestamp"].iloc[0] == pd.Timestamp("2025-10-28T08:00:00.408689Z")
    assert pf.metadata is not None
    assert pf.metadata["monitoring"] == {"sample_hz": 1.0, "sample_hz_as_written": 0.001}
    assert pf.flags["file_name_utc_offset_hours"] == "-5"
    assert list(pf.rows["device"][:2]) == ["cpu", "gpu"]  # CPU row first in v2


# ------------------------------------------------------------------------------ damage


def test_damage_is_counted_by_reason_and_never_silent(tmp_path: Path) -> None:
    lines = _v03_lines(40)
    lines = W.tear(lines, 10, 25)  # a torn write glued to the next line: two timestamps
    lines = W.duplicate(lines, 20, times_=2)
    lines.insert(30, "")
    cpu_i = next(i for i in range(32, 40) if ",cpu," in lines[i])
    gpu_i = next(i for i in range(32, 40) if ",gpu," in lines[i])
    lines[cpu_i] = lines[cpu_i].replace(",cpu,", ",npu,")
    head, _, _, rest = lines[gpu_i].split(",", 3)
    lines[gpu_i] = f"{head},gpu,0.1x,{rest}"
    lines = W.truncate(lines, len(lines) - 1, 30)  # crash mid-write, no final newline
    p = _write(tmp_path, "rle_20251028_08.csv", "v03", lines, final_newline=False)
    pf = read_monitor_csv(p)
    short_gpu = sum(1 for ln in lines if ln.count(",") == 16 and ",gpu," in ln)
    assert pf.counts == {
        "repaired.short_gpu_row_padded": short_gpu,
        "skipped.blank_line": 1,
        "skipped.duplicate_row": 2,
        "skipped.torn_line": 2,
        "skipped.unknown_device": 1,
        "skipped.unparseable_value": 1,
    }
    skipped = sum(v for k, v in pf.counts.items() if k.startswith("skipped."))
    assert len(pf.rows) + skipped == len(lines)  # every data line accounted for
    assert len(pf.skipped_lines) == skipped
    assert {r for _, r in pf.skipped_lines} == {
        "blank_line", "duplicate_row", "torn_line", "unknown_device", "unparseable_value",
    }  # fmt: skip
    assert len(pf.segments) == 1  # damage does not split the recording


def test_seventeen_value_gpu_rows_only_under_19_column_header(tmp_path: Path) -> None:
    lines = _v03_lines(5)
    cpu_short = lines[1].rsplit(",", 2)[0]  # a CPU row with 17 values is torn, not padded
    p = _write(tmp_path, "rle_20251028_08.csv", "v03", [*lines, cpu_short])
    pf = read_monitor_csv(p)
    assert pf.counts == {"repaired.short_gpu_row_padded": 5, "skipped.torn_line": 1}


def test_mixed_z_and_naive_timestamps_are_utc(tmp_path: Path) -> None:
    lines = _v03_lines(12, cpu=False)
    mixed = [ln.replace("Z,", ",", 1) if i % 3 == 0 else ln for i, ln in enumerate(lines)]
    a = read_monitor_csv(_write(tmp_path, "a.csv", "v03", lines))
    b = read_monitor_csv(_write(tmp_path, "b.csv", "v03", mixed))
    assert b.counts["repaired.naive_timestamp_read_as_utc"] == 4
    pd.testing.assert_series_equal(
        a.segments[0].streams["gpu_0"].frame["timestamp"],
        b.segments[0].streams["gpu_0"].frame["timestamp"],
    )
    # isoformat drops a zero fraction; older builds always wrote one: both parse
    whole = [lines[0].replace(".408689Z", "Z", 1), *lines[1:]]
    c = read_monitor_csv(_write(tmp_path, "c.csv", "v03", whole))
    assert c.rows["timestamp"].iloc[0] == pd.Timestamp("2025-10-28T08:00:00Z")


def test_pandas_reformatted_copy_parses_by_value(tmp_path: Path) -> None:
    lines = _v03_lines(15)
    reformatted = W.pandas_reformat(lines, "v03")
    assert ",1.0," in "".join(reformatted) or ",0.0," in "".join(reformatted)
    a = read_monitor_csv(_write(tmp_path, "a.csv", "v03", lines))
    b = read_monitor_csv(_write(tmp_path, "b.csv", "v03", reformatted, eol="\n"))
    assert b.counts == {}  # pandas wrote every field, GPU rows too
    for dev in ("gpu_0", "cpu"):
        fa, fb = a.segments[0].streams[dev].frame, b.segments[0].streams[dev].frame
        pd.testing.assert_frame_equal(
            fa.drop(columns=["line_no", "alerts"]), fb.drop(columns=["line_no", "alerts"])
        )


# ------------------------------------------------------------------------------ writers, restarts


def test_interleaved_writers_are_split(tmp_path: Path) -> None:
    a = _v03_lines(40, seed=1)
    b = _v03_lines(40, seed=2, start=W.T0 + dt.timedelta(seconds=10.45))
    p = _write(tmp_path, "rle_20251028_08.csv", "v03", W.interleave(a, b))
    pf = read_monitor_csv(p)
    assert pf.flags["interleaved_writers"] == "2"
    assert [(s.writer, s.start_reason, s.starts_fresh) for s in pf.segments] == [
        (0, "file_start", True),
        (1, "new_writer", True),
    ]
    ref_a = read_monitor_csv(_write(tmp_path, "a.csv", "v03", a)).segments[0]
    ref_b = read_monitor_csv(_write(tmp_path, "b.csv", "v03", b)).segments[0]
    for seg, ref in zip(pf.segments, (ref_a, ref_b), strict=True):
        for dev in ("gpu_0", "cpu"):
            got, want = seg.streams[dev].frame, ref.streams[dev].frame
            pd.testing.assert_frame_equal(got.drop(columns="line_no"), want.drop(columns="line_no"))


def test_interleaved_writers_with_close_phase_and_torn_lines(tmp_path: Path) -> None:
    a = _v03_lines(40, seed=3, cpu=False)
    b = _v03_lines(40, seed=4, start=W.T0 + dt.timedelta(seconds=3.1), cpu=False)
    lines = W.tear(W.interleave(a, b), 30, 20)
    pf = read_monitor_csv(_write(tmp_path, "rle_20251028_08.csv", "v03", lines))
    assert pf.flags["interleaved_writers"] == "2"
    assert len(pf.segments) == 2
    assert sum(s.n_samples for s in pf.segments) == 78  # the tear took two rows


def test_restart_splits_segments(tmp_path: Path) -> None:
    first = _v03_lines(70, seed=5)  # past the 60 s warm-up: rolling_peak > 0
    second = _v03_lines(20, seed=6, start=W.T0 + dt.timedelta(seconds=75))
    pf = read_monitor_csv(_write(tmp_path, "rle_20251028_08.csv", "v03", [*first, *second]))
    assert pf.flags["restarts"] == "1"
    assert "interleaved_writers" not in pf.flags
    assert [(s.writer, s.start_reason, s.starts_fresh, s.n_samples) for s in pf.segments] == [
        (0, "file_start", True, 140),
        (0, "restart", True, 40),
    ]


def test_restart_during_warm_up_after_a_gap(tmp_path: Path) -> None:
    first = _v03_lines(20, seed=5)  # never warm: rolling_peak stays 0
    second = _v03_lines(20, seed=6, start=W.T0 + dt.timedelta(seconds=30))
    pf = read_monitor_csv(_write(tmp_path, "rle_20251028_08.csv", "v03", [*first, *second]))
    assert [s.start_reason for s in pf.segments] == ["file_start", "restart"]


def test_repeated_header_starts_a_new_recording(tmp_path: Path) -> None:
    first = _v03_lines(8, seed=5)
    second = _v03_lines(8, seed=6, start=W.T0 + dt.timedelta(seconds=8.1))
    pf = read_monitor_csv(_write(tmp_path, "x.csv", "v03", [*first, W.header("v03"), *second]))
    assert pf.counts["skipped.repeated_header"] == 1
    assert [s.start_reason for s in pf.segments] == ["file_start", "header_repeated"]


def test_continuation_file_does_not_start_fresh(tmp_path: Path) -> None:
    lines = _v03_lines(90, seed=7)
    pf = read_monitor_csv(_write(tmp_path, "rle_20251028_09.csv", "v03", lines[100:]))
    assert len(pf.segments) == 1
    assert not pf.segments[0].starts_fresh


# ------------------------------------------------------------------------------ joint sessions


def _bundle(tmp_path: Path, n: int = 30, **kw: object) -> Path:
    g = W.simulate_inputs(n, device="gpu", seed=1, period_s=1.0)
    c = W.simulate_inputs(n, device="cpu", seed=2, period_s=1.0)
    t0 = g["timestamp"].iloc[0].timestamp()
    entries = W.training_entries(40, start_epoch_s=t0 + 9.0)
    return W.write_joint_session(
        tmp_path / "session",
        "20251028_031500",
        W.to_lines(W.v2_rows(c, g)),
        entries,
        **kw,  # type: ignore[arg-type]
    )


def test_read_joint_session(tmp_path: Path) -> None:
    folder = _bundle(tmp_path, analysis={"aligned_samples": 41})
    s = read_joint_session(folder)
    assert (s.session_id, s.source, s.profile) == ("20251028_031500", "rle_lab_joint", "legacy_v2")
    assert len(s.training_entries) == 41
    assert len(s.training) == 41
    assert s.training["is_summary"].tolist() == [False] * 40 + [True]
    assert s.counts == {"repaired.training_summary_entry_not_logged": 1}
    first = s.training_entries[0]
    assert s.training["timestamp"].iloc[0] == pd.to_datetime(
        first["timestamp_shared"], unit="s", utc=True
    )
    assert s.analysis == {"session_id": "20251028_031500", "model": "distilgpt2", "aligned_samples": 41,
                          "instrument_name": "RLE", "version": "2.0", "git_hash": "aab12fb",
                          "git_status": "clean"}  # fmt: skip
    assert s.version is not None
    assert s.report_text is not None
    assert {p.name for p in s.files} == {
        "rle_data_20251028_031500.csv", "training_log_20251028_031500.json",
        "analysis_20251028_031500.json", "version_20251028_031500.json", "report_20251028_031500.txt",
    }  # fmt: skip
    assert s.monitor.flags["file_name_utc_offset_hours"] == "-5"


def test_joint_session_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ImportFormatError, match="expected exactly one joint-session bundle.*found none"
    ):
        read_joint_session(tmp_path)
    folder = _bundle(tmp_path)
    (folder / "rle_data_20251028_040000.csv").write_text(
        (folder / "rle_data_20251028_031500.csv").read_text()
    )
    (folder / "training_log_20251028_040000.json").write_text("{not json")
    with pytest.raises(ImportFormatError, match="found 2: 20251028_031500, 20251028_040000"):
        read_joint_session(folder)
    with pytest.raises(
        ImportFormatError, match="training_log_20251028_040000.json: not a readable training log"
    ):
        read_joint_session(folder, "20251028_040000")
    assert read_joint_session(folder, "20251028_031500").session_id == "20251028_031500"


def test_writers_in_different_modes_are_split(tmp_path: Path) -> None:
    gpu_only = _v03_lines(20, seed=8, cpu=False)
    c = W.simulate_inputs(20, device="cpu", seed=9, start=W.T0 + dt.timedelta(seconds=0.6))
    cpu_only = W.to_lines(W.v03_rows(None, c))
    pf = read_monitor_csv(_write(tmp_path, "x.csv", "v03", W.interleave(gpu_only, cpu_only)))
    assert [s.devices for s in pf.segments] == [("gpu_0",), ("cpu",)]
    assert [s.n_samples for s in pf.segments] == [20, 20]


def test_rows_without_the_5_sample_smoothing_fall_back_to_timing(tmp_path: Path) -> None:
    # e.g. a monitor run with --smooth-n 1: rle_smoothed == rle_raw, the writer check cannot work
    lines = []
    for ln in _v03_lines(40, seed=10, cpu=False):
        f = ln.split(",")
        f[2] = f[3]
        lines.append(",".join(f))
    pf = read_monitor_csv(_write(tmp_path, "x.csv", "v03", lines))
    assert pf.flags["stream_split"] == "timing_only"
    assert len(pf.segments) == 1
    assert pf.segments[0].n_samples == 40
