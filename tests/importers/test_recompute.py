"""Recomputation of imported RLE columns and agreement (rle.importers.recompute), §11 vectors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rle_lab_writers as W

from rle.importers.recompute import recompute_files
from rle.importers.rle_lab import V03_COLUMNS, V2_COLUMNS, read_monitor_csv


def _ts(i: int, *, z: bool) -> str:
    t = (W.T0 + dt.timedelta(seconds=i)).isoformat()
    return t + "Z" if z else t


def _by_column(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("column")


# ------------------------------------------------------------------------------ §11.3 legacy_v2

V2_REF = [  # idx, util, temp, rle_raw, rle_smoothed, E_th, E_pw, tau, rolling_peak, collapse
    (0, 30, 56, 0, 0, 0, 0, 0.0, 0, 0),
    (1, 31, 56, 0.125844, 0.125844, 0.324760, 0.387500, 600, 0.125844, 0),
    (2, 31, 56, 0.125844, 0.125844, 0.324760, 0.387500, 600, 0.125844, 0),
    (3, 29, 56, 0.117725, 0.117725, 0.324760, 0.362500, 600, 0.117725, 0),
    (4, 30, 56, 0.121785, 0.122597, 0.324760, 0.375000, 600, 0.125593, 0),
    (5, 28, 56, 0.113666, 0.120973, 0.324760, 0.350000, 600, 0.125593, 0),
    (6, 29, 56, 0.117725, 0.119349, 0.324760, 0.362500, 600, 0.125593, 0),
    (7, 32, 56, 0.129904, 0.120161, 0.324760, 0.400000, 600, 0.129644, 0),
]


def test_v2_reference_vector_recomputes_to_1e6(tmp_path: Path) -> None:
    rows = []
    for i, util, temp, raw, sm, eth, epw, tau, peak, col in V2_REF:
        rec = dict.fromkeys(V2_COLUMNS, "")
        rec.update(
            timestamp=_ts(i, z=False), device="gpu", rle_smoothed=f"{sm:.6f}", rle_raw=f"{raw:.6f}",
            E_th=f"{eth:.6f}", E_pw=f"{epw:.6f}", temp_c=str(temp), power_w="95.5", util_pct=str(util),
            a_load="0.8", t_sustain_s=str(float(tau)), rolling_peak=f"{peak:.6f}", collapse=str(col),
            workload_state="idle",
        )  # fmt: skip
        rows.append([rec[c] for c in V2_COLUMNS])
    pf = read_monitor_csv(
        W.write_monitor_csv(tmp_path / "rle_enhanced_20251028_03.csv", "v2", rows)
    )
    assert pf.segments[0].starts_fresh
    rc = recompute_files([pf])[(0, 0, "gpu_0")]
    table = _by_column(rc.agreement)
    assert set(table.index) == {"rle_raw", "rle_smoothed", "E_th", "E_pw", "a_load", "t_sustain_s",
                                "rolling_peak", "collapse"}  # fmt: skip
    assert (table["rows_compared"] == 8).all()
    assert (table["rows_within_tolerance"] == 8).all()
    assert (table["rows_excluded"] == 0).all()
    for j, col in enumerate(("rle_raw", "rle_smoothed", "E_th", "E_pw"), start=3):
        want = np.array([r[j] for r in V2_REF], dtype=float)
        np.testing.assert_allclose(rc.legacy[col].to_numpy(), want, rtol=1e-6, atol=5.01e-7)
    assert rc.legacy["collapse"].tolist() == [0] * 8


def test_v2_mismatch_is_reported_with_its_line(tmp_path: Path) -> None:
    g = W.simulate_inputs(20, device="gpu", seed=4, period_s=1.0)
    lines = W.to_lines(W.v2_rows(None, g))
    fields = lines[12].split(",")
    e_pw = V2_COLUMNS.index("E_pw")
    fields[e_pw] = str(float(fields[e_pw]) * 1.001)  # not used by the writer check
    lines[12] = ",".join(fields)
    pf = read_monitor_csv(W.write_lines(tmp_path / "x.csv", [W.header("v2"), *lines]))
    table = _by_column(recompute_files([pf])[(0, 0, "gpu_0")].agreement)
    assert table.loc["E_pw", "rows_within_tolerance"] == 19
    assert table.loc["E_pw", "first_mismatch_line"] == 14  # header + 12 rows before it
    assert table.loc["E_pw", "max_rel_error"] == pytest.approx(1e-3, rel=2e-3)
    assert (table.drop(index="E_pw")["rows_within_tolerance"] == 20).all()


# ------------------------------------------------------------------------------ §11.1 legacy_v03 GPU

V03_INPUTS = {  # idx: (util, temp, power)
    14: (70, 75, 185.05), 15: (56, 72, 181.53), 16: (65, 74, 174.81), 17: (60, 73, 174.41),
    18: (67, 74, 179.75), 19: (55, 73, 181.74), 20: (56, 73, 177.29), 21: (60, 74, 176.10),
    22: (68, 73, 180.11), 23: (80, 74, 183.67), 24: (89, 74, 192.98), 25: (71, 74, 188.89),
    26: (68, 74, 186.37), 27: (55, 72, 180.14), 28: (81, 75, 189.07),
}  # fmt: skip
V03_OUT = {  # idx: rle_raw, rle_smoothed, E_th, E_pw, tau, rle_norm, rolling_peak
    23: (0.092558, 0.088709, 0.106250, 0.871132, 9.0, 0.058170, 0.168685),
    24: (0.079421, 0.091471, 0.086105, 0.922366, 600, 0.106207, 0.168347),
    25: (0.067112, 0.088778, 0.089274, 0.751748, 600, 0.040561, 0.168011),
    26: (0.065275, 0.083458, 0.089451, 0.729731, 600, 0.034630, 0.167675),
    27: (0.052440, 0.071361, 0.085879, 0.610633, 600, 0.025871, 0.167339),
    28: (0.050103, 0.062870, 0.058476, 0.856821, 8 / 3, 0.043321, 0.167005),
}


def _v03_reference_rows() -> list[list[str]]:
    """Samples 14-28 of §11.1 as a file that starts mid-recording (hourly rotation)."""
    raw = {i: 0.08 for i in range(14, 19)}
    for i in range(24, 28):  # rle_raw(i-5) = rle_raw(i) + 5·(sm(i-1) - sm(i))
        raw[i - 5] = V03_OUT[i][0] + 5 * (V03_OUT[i - 1][1] - V03_OUT[i][1])
    rows = []
    prev_temp = None
    for i in range(14, 29):
        util, temp, power = V03_INPUTS[i]
        if i in V03_OUT:
            r, sm, eth, epw, tau, norm, peak = V03_OUT[i]
        else:
            r = raw[i]
            window = [raw[k] for k in range(max(14, i - 4), i + 1)]
            sm = sum(window) / len(window)
            eth, norm = 0.09, 0.05  # depend on earlier samples: excluded from the comparison
            epw = (util / 100) / (power / 200)
            rate = max(temp - prev_temp, 1e-3) if prev_temp is not None else None
            tau = 600.0 if rate is None else min(max((83 - temp) / rate, 1.0), 600.0)
            peak = 0.169023 / 0.998 ** (22 - i)
        rows.append([
            _ts(i, z=True), "gpu", f"{sm:.6f}", f"{r:.6f}", f"{norm:.6f}", f"{eth:.6f}", f"{epw:.6f}",
            f"{temp:.2f}", "", f"{power:.2f}", f"{util:.2f}", f"{power / 200:.3f}", f"{tau:.1f}", "40",
            f"{peak:.6f}", "0", "",
        ])  # fmt: skip
        prev_temp = temp
    return rows


def test_v03_gpu_reference_vector(tmp_path: Path) -> None:
    pf = read_monitor_csv(
        W.write_monitor_csv(tmp_path / "rle_20251028_08.csv", "v03", _v03_reference_rows())
    )
    assert len(pf.segments) == 1
    assert not pf.segments[0].starts_fresh
    rc = recompute_files([pf])[(0, 0, "gpu_0")]
    assert not rc.chain_fresh
    table = _by_column(rc.agreement)
    assert (table["rows_within_tolerance"] == table["rows_compared"]).all(), table
    expected_compared = {"rle_raw": 6, "E_th": 6, "E_pw": 15, "t_sustain_s": 14, "a_load": 15,
                         "rle_smoothed": 2, "rle_norm": 2, "rolling_peak": 0, "collapse": 0}  # fmt: skip
    assert table["rows_compared"].to_dict() == expected_compared
    legacy = rc.legacy.iloc[9:].reset_index(drop=True)  # samples 23..28
    for j, col in enumerate(("rle_raw", "rle_smoothed", "E_th", "E_pw", "t_sustain_s", "rle_norm")):
        want = np.array([V03_OUT[i][j] for i in range(23, 29)])
        got = legacy[col].to_numpy()
        rows = slice(4, 6) if col in ("rle_smoothed", "rle_norm") else slice(0, 6)
        np.testing.assert_allclose(got[rows], want[rows], rtol=2e-3, atol=6e-7)
    assert legacy["t_sustain_s"].iloc[5] == pytest.approx(8 / 3)


def test_v03_cpu_reference_vector(tmp_path: Path) -> None:
    """§11.2: σ from the last 10 utils, estimated power, τ = 600, cycles_per_joule."""
    utils = [14.2, 14.3, 12.4, 12.8, 12.4, 12.6, 13.8, 24.3, 12.4, 15.0]
    raws = [0.2] * 9 + [0.226158]
    rows = []
    for k, (u, r) in enumerate(zip(utils, raws, strict=True)):
        power = 125 * u / 100
        window = raws[max(0, k - 4) : k + 1]
        rows.append([
            _ts(18 + k, z=True), "cpu", f"{sum(window) / len(window):.6f}", f"{r:.6f}", "0.1",
            f"{r:.6f}", "1.000000", "", "", f"{power:.2f}", f"{u:.2f}", f"{power / 125:.3f}", "600.0", "",
            "0.300000", "0", "", "2.496", f"{2.496e9 / power:.6e}",
        ])  # fmt: skip
    pf = read_monitor_csv(W.write_monitor_csv(tmp_path / "rle_20251028_08.csv", "v03", rows))
    stream = pf.segments[0].streams["cpu"]
    assert (stream.power_source, stream.temp_source) == ("estimated", "none")
    rc = recompute_files([pf])[(0, 0, "cpu")]
    assert rc.legacy["rle_raw"].iloc[9] == pytest.approx(0.226158, abs=1e-6)
    assert rc.legacy["stability"].iloc[9] == pytest.approx(0.226535, abs=1e-6)
    assert rc.legacy["cycles_per_joule"].iloc[9] == pytest.approx(1.3312e8, rel=1e-4)
    table = _by_column(rc.agreement)
    assert table.loc["rle_raw", "rows_compared"] == 1
    assert (table["rows_within_tolerance"] == table["rows_compared"]).all(), table
    assert table.loc["cycles_per_joule", "rows_compared"] == 10


# ------------------------------------------------------------------------------ chains, lost rows


def _recording(n: int, seed: int = 11) -> list[str]:
    g = W.simulate_inputs(n, device="gpu", seed=seed)
    c = W.simulate_inputs(n, device="cpu", seed=seed + 1)
    return W.to_lines(W.v03_rows(g, c))


def test_hourly_rotation_is_seeded_from_the_previous_file(tmp_path: Path) -> None:
    lines = _recording(100)
    f1 = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *lines[:140]])
    f2 = W.write_lines(tmp_path / "rle_20251028_09.csv", [W.header("v03"), *lines[140:]])
    p1, p2 = read_monitor_csv(f1), read_monitor_csv(f2)
    assert p1.segments[0].starts_fresh
    assert not p2.segments[0].starts_fresh

    alone = recompute_files([p2])
    for dev in ("gpu_0", "cpu"):
        t = alone[(0, 0, dev)].agreement
        assert (t["rows_within_tolerance"] == t["rows_compared"]).all()
        assert t.set_index("column").loc["rle_smoothed", "rows_excluded"] == 13

    both = recompute_files([p2, p1])  # any order
    for dev in ("gpu_0", "cpu"):
        rc = both[(0, 0, dev)]
        assert rc.seeded_from == "rle_20251028_08.csv#0"
        assert rc.chain_fresh
        t = rc.agreement
        assert (t["rows_excluded"] == 0).all()
        assert (t["rows_within_tolerance"] == t["rows_compared"]).all()
        assert t.set_index("column").loc["rolling_peak", "rows_compared"] == 30


def test_rows_after_a_lost_sample_are_excluded_not_mismatched(tmp_path: Path) -> None:
    lines = W.tear(_recording(80, seed=12), 100, 30)  # loses ticks 50 (CPU) and 51 (GPU)
    pf = read_monitor_csv(
        W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *lines])
    )
    assert pf.counts["skipped.torn_line"] == 1
    for dev in ("gpu_0", "cpu"):
        t = recompute_files([pf])[(0, 0, dev)].agreement.set_index("column")
        assert (t["rows_within_tolerance"] == t["rows_compared"]).all(), t
        assert t.loc["rle_smoothed", "rows_excluded"] == 13


def test_default_profile_beside_legacy(tmp_path: Path) -> None:
    pf = read_monitor_csv(W.write_lines(tmp_path / "r.csv", [W.header("v03"), *_recording(30)]))
    res = recompute_files([pf], with_default=True)
    gpu, cpu = res[(0, 0, "gpu_0")], res[(0, 0, "cpu")]
    assert gpu.default is not None
    assert cpu.default is not None
    assert np.isfinite(gpu.default["rle_raw"]).all()
    assert gpu.default["rle_norm"].isna().all()  # default has no rle_norm
    # the CPU power was an estimate: the default profile does not use it (§2.8)
    assert cpu.default["rle_raw"].isna().all()
    assert recompute_files([pf])[(0, 0, "gpu_0")].default is None


def test_columns_compared_exist_for_each_format() -> None:
    assert {"rle_norm", "cycles_per_joule"} <= set(V03_COLUMNS)


def test_monitor_run_with_another_smoothing_window(tmp_path: Path) -> None:
    """--smooth-n 3: detected from the rows, used for the writer check and the recomputation."""
    g = W.simulate_inputs(40, device="gpu", seed=21)
    out = W.compute(g, device="gpu_0", profile="legacy_v03", **{"smooth.window_s": 3})
    rows = W.v03_rows(g, None)
    for row, sm in zip(rows, out["rle_smoothed"], strict=True):
        row[2] = f"{sm:.6f}"
    pf = read_monitor_csv(W.write_monitor_csv(tmp_path / "rle_20251028_08.csv", "v03", rows))
    assert pf.smooth_n == 3
    assert len(pf.segments) == 1
    t = recompute_files([pf])[(0, 0, "gpu_0")].agreement.set_index("column")
    assert t.loc["rle_smoothed", "rows_within_tolerance"] == 40
    assert t.loc["rle_norm", "rows_within_tolerance"] < 40  # the stored rle_norm used SMA-5 here
