"""Writers of small files in the RLE lab's formats (docs/rle-metric.md §6), with damage helpers.

Recordings are simulated: inputs (util, temp, power) are drawn from a seeded generator and the
stored RLE columns are computed with ``rle.metric.compute`` and the legacy profile, then written
exactly as the lab's monitors did (v0.3: ``%.6f`` etc., GPU rows with 17 values, ``Z``
timestamps, CRLF; v2: Python ``str(float)``, CPU row before GPU row, naive UTC timestamps).
Damage helpers work on the list of text lines.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rle.importers.rle_lab import V03_COLUMNS, V03_OLD_COLUMNS, V2_COLUMNS
from rle.metric import compute

T0 = dt.datetime(2025, 10, 28, 8, 0, 0, 408689)
"""Naive UTC start time used by default."""


def times(n: int, start: dt.datetime = T0, period_s: float = 1.003) -> list[dt.datetime]:
    """``n`` naive UTC tick times, ``period_s`` apart (the v0.3 monitor's real period)."""
    return [start + dt.timedelta(seconds=period_s * i) for i in range(n)]


def simulate_inputs(
    n: int, *, device: str = "gpu", seed: int = 0, start: dt.datetime = T0, period_s: float = 1.003
) -> pd.DataFrame:
    """Seeded monitor inputs: GPU (integer util and temp, power W to 2 decimals) or CPU."""
    rng = np.random.default_rng(seed)
    ts = times(n, start, period_s)
    if device == "gpu":
        util = np.clip(np.round(70 + 15 * rng.standard_normal(n)), 0, 100)
        temp = np.clip(np.round(60 + np.cumsum(rng.choice([-1, 0, 0, 0, 1], size=n))), 30, 90)
        power = np.round(60 + 1.3 * util + 3 * rng.standard_normal(n), 2)
    else:
        util = np.clip(np.round(20 + 6 * rng.standard_normal(n), 1), 0, 100)
        temp = np.full(n, np.nan)
        power = np.full(n, np.nan)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(ts).tz_localize("UTC"),
            "util_pct": util.astype(float),
            "temp_c": temp.astype(float),
            "power_w": power.astype(float),
        }
    )


def _v03_ts(t: dt.datetime) -> str:
    return t.isoformat() + "Z"


def _fmt_e(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.6e}"


def v03_rows(
    gpu: pd.DataFrame | None,
    cpu: pd.DataFrame | None = None,
    *,
    old: bool = False,
    cpu_freq_ghz: float = 2.496,
    rated_gpu_w: float = 200.0,
) -> list[list[str]]:
    """Rows of a v0.3 monitor (GPU row first, then CPU row, same timestamp).

    ``gpu``/``cpu`` are inputs from :func:`simulate_inputs` sharing timestamps. The CPU has no
    HWiNFO: power is estimated (19 columns) or missing with α = 0 (``old``, 16 columns).
    """
    out_g = out_c = None
    if gpu is not None:
        out_g = compute(gpu, device="gpu_0", profile="legacy_v03", rated_w=rated_gpu_w)
    if cpu is not None:
        c = cpu.copy()
        c["power_w"] = np.nan
        if not old:
            c["cpu_freq_ghz"] = cpu_freq_ghz
        fallback = {"load.cpu_power_fallback": "zero"} if old else {}
        out_c = compute(c, device="cpu", profile="legacy_v03", **fallback)
    n = len(gpu) if gpu is not None else len(cpu)  # type: ignore[arg-type]
    rows: list[list[str]] = []
    for i in range(n):
        for kind, out in (("gpu", out_g), ("cpu", out_c)):
            if out is None:
                continue
            r = out.iloc[i]
            ts = _v03_ts(r["timestamp"].tz_convert(None).to_pydatetime())
            head = [ts, kind, f"{r['rle_smoothed']:.6f}", f"{r['rle_raw']:.6f}"]
            if not old:
                head.append(f"{r['rle_norm']:.6f}")
            head += [f"{r['E_th']:.6f}", f"{r['E_pw']:.6f}"]
            if kind == "gpu":
                body = [
                    f"{r['temp_c']:.2f}", "", f"{r['power_w']:.2f}", f"{r['util_pct']:.2f}",
                    f"{r['a_load']:.3f}", f"{r['t_sustain_s']:.1f}", "42", f"{r['rolling_peak']:.6f}",
                    str(int(r["collapse"])), "",
                ]  # fmt: skip
                rows.append(head + body)  # 17 values under the 19-column header
            else:
                power = "" if old else f"{125.0 * r['util_pct'] / 100.0:.2f}"
                body = [
                    "", "", power, f"{r['util_pct']:.2f}", f"{r['a_load']:.3f}",
                    f"{r['t_sustain_s']:.1f}", "", f"{r['rolling_peak']:.6f}",
                    str(int(r["collapse"])), "",
                ]  # fmt: skip
                if not old:
                    body += [f"{cpu_freq_ghz:.3f}", _fmt_e(float(r["cycles_per_joule"]))]
                rows.append(head + body)
    return rows


def v2_rows(cpu: pd.DataFrame | None, gpu: pd.DataFrame | None) -> list[list[str]]:
    """Rows of a v2 monitor (CPU row first, then GPU row; naive UTC timestamps; 42 columns)."""
    outs = {}
    if cpu is not None:
        c = cpu.copy()
        c["temp_c"] = c["temp_c"].fillna(50.0)
        c["power_w"] = 125.0
        outs["cpu"] = compute(c, device="cpu", profile="legacy_v2")
    if gpu is not None:
        outs["gpu"] = compute(gpu, device="gpu_0", profile="legacy_v2")
    n = len(next(iter(outs.values())))
    rows = []
    for i in range(n):
        for kind in ("cpu", "gpu"):
            if kind not in outs:
                continue
            r = outs[kind].iloc[i]
            rec: dict[str, Any] = dict.fromkeys(V2_COLUMNS, "")
            util = r["util_pct"]
            rec.update(
                timestamp=r["timestamp"].tz_convert(None).to_pydatetime().isoformat(),
                device=kind,
                rle_smoothed=str(float(r["rle_smoothed"])),
                rle_raw=str(float(r["rle_raw"])),
                E_th=str(float(r["E_th"])),
                E_pw=str(float(r["E_pw"])),
                temp_c=str(float(r["temp_c"])) if kind == "cpu" else str(int(r["temp_c"])),
                power_w=str(float(r["power_w"])),
                util_pct=str(float(util)) if kind == "cpu" else str(int(util)),
                a_load="0.8",
                t_sustain_s=str(float(r["t_sustain_s"])),
                rolling_peak=str(float(r["rolling_peak"])),
                collapse=str(int(r["collapse"])),
                workload_state="training_step"
                if util > 70
                else ("data_prep" if util > 30 else "idle"),
            )
            if kind == "cpu":
                rec.update(cpu_freq_mhz="2496.0", cpu_cores_active="3", cpu_temp_max="")
            else:
                rec.update(
                    gpu_memory_used_gb="1.5",
                    gpu_memory_total_gb="8.0",
                    gpu_fan_pct="40",
                    gpu_clock_mhz="1800",
                )
            rows.append([rec[c] for c in V2_COLUMNS])
    return rows


def to_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Format rows as CSV lines (no terminators)."""
    out = []
    for r in rows:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(r)
        out.append(buf.getvalue())
    return out


def header(fmt: str) -> str:
    """The header line of a format (``v03``, ``v03_old``, ``v2``)."""
    cols = {"v03": V03_COLUMNS, "v03_old": V03_OLD_COLUMNS, "v2": V2_COLUMNS}[fmt]
    return ",".join(cols)


def write_lines(
    path: Path, lines: Sequence[str], *, eol: str = "\r\n", final_newline: bool = True
) -> Path:
    """Write lines with ``eol`` (the lab ran on Windows: CRLF)."""
    text = eol.join(lines) + (eol if final_newline else "")
    path.write_bytes(text.encode("utf-8"))
    return path


def write_monitor_csv(path: Path, fmt: str, rows: Sequence[Sequence[str]], **kw: Any) -> Path:
    """Write a header plus rows."""
    return write_lines(path, [header(fmt), *to_lines(rows)], **kw)


# -------------------------------------------------------------------------------- damage


def tear(lines: list[str], index: int, keep: int) -> list[str]:
    """Cut line ``index`` after ``keep`` characters and glue the next line on (torn write)."""
    out = list(lines)
    out[index] = out[index][:keep] + out[index + 1]
    del out[index + 1]
    return out


def truncate(lines: list[str], index: int, keep: int) -> list[str]:
    """Cut line ``index`` after ``keep`` characters (a crash mid-write)."""
    out = list(lines)
    out[index] = out[index][:keep]
    return out


def duplicate(lines: list[str], index: int, times_: int = 1) -> list[str]:
    """Repeat line ``index`` right after itself."""
    return lines[: index + 1] + [lines[index]] * times_ + lines[index + 1 :]


def interleave(a: list[str], b: list[str]) -> list[str]:
    """Merge two writers' data lines by their timestamps (first field), as appends would land."""
    key = lambda line: line.split(",", 1)[0].rstrip("Z")  # noqa: E731
    return sorted([*a, *b], key=key)  # stable: ties keep a before b


def interleave_shared(a: list[str], b: list[str], *, seed: int = 0) -> list[str]:
    """Merge two writers' lines whose rows share timestamps, as concurrent appends can land.

    Each writer's own lines keep their order (one process writes its rows in sequence); at a
    timestamp both writers have, which writer's next line comes first is drawn at random, so a
    GPU row of one writer can sit between the GPU and CPU rows of the other.
    """
    rng = np.random.default_rng(seed)
    key = lambda line: line.split(",", 1)[0].rstrip("Z")  # noqa: E731
    out: list[str] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and key(a[i]) < key(b[j])):
            out.append(a[i])
            i += 1
        elif i >= len(a) or key(b[j]) < key(a[i]):
            out.append(b[j])
            j += 1
        elif rng.random() < 0.5:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def periodic_inputs(frame: pd.DataFrame, period: int = 5) -> pd.DataFrame:
    """The inputs with their first ``period`` samples repeated over the whole stream."""
    out = frame.copy()
    n = len(out)
    for col in ("util_pct", "temp_c", "power_w"):
        v = out[col].to_numpy()[:period]
        out[col] = np.tile(v, n // period + 1)[:n]
    return out


def pandas_reformat(lines: list[str], fmt: str) -> list[str]:
    """Round-trip through pandas as the lab's published copies were (``1.0`` in collapse)."""
    df = pd.read_csv(io.StringIO("\n".join([header(fmt), *lines])))
    df["collapse"] = df["collapse"].astype(float)
    text = df.to_csv(index=False, lineterminator="\n")
    return text.splitlines()[1:]


# -------------------------------------------------------------------------------- joint sessions


def training_entries(
    n_steps: int,
    *,
    start_epoch_s: float,
    step_s: float = 0.41,
    seed: int = 0,
    local_offset_h: float = -5.0,
) -> list[dict[str, Any]]:
    """A training log: one entry per optimizer step plus the summary entry with null loss/grad."""
    rng = np.random.default_rng(seed)
    entries = []
    for k in range(n_steps):
        t = start_epoch_s + k * step_s + 0.01 * rng.random()
        local = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=t + local_offset_h * 3600)
        entries.append(
            {
                "step": k + 1,
                "step_counter": k + 1,
                "timestamp_shared": t,
                "timestamp_iso": local.isoformat(),
                "loss": float(4.0 - 0.02 * k + 0.1 * rng.standard_normal()),
                "grad_norm": float(20.0 * np.exp(-k / 40) + rng.random()),
                "learning_rate": 5e-5,
                "epoch": k / n_steps,
            }
        )
    last = entries[-1]
    t_end = last["timestamp_shared"] + 0.2
    entries.append(
        {
            "step": last["step"],
            "step_counter": last["step_counter"] + 1,
            "timestamp_shared": t_end,
            "timestamp_iso": (
                dt.datetime(1970, 1, 1) + dt.timedelta(seconds=t_end + local_offset_h * 3600)
            ).isoformat(),
            "loss": None,
            "grad_norm": None,
            "learning_rate": 5e-5,
            "epoch": 1.0,
        }
    )
    return entries


def write_joint_session(
    folder: Path,
    session_id: str,
    monitor_lines: Sequence[str],
    entries: Sequence[dict[str, Any]],
    *,
    analysis: dict[str, Any] | None = None,
    with_version: bool = True,
    with_report: bool = True,
) -> Path:
    """Write a bundle folder: rle_data, training_log, optional analysis/version/report."""
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / f"rle_data_{session_id}.csv", [header("v2"), *monitor_lines])
    (folder / f"training_log_{session_id}.json").write_text(json.dumps(list(entries), indent=2))
    version = {
        "instrument_name": "RLE",
        "version": "2.0",
        "git_hash": "aab12fb",
        "git_status": "clean",
    }
    if analysis is not None:
        (folder / f"analysis_{session_id}.json").write_text(
            json.dumps(
                {"session_id": session_id, "model": "distilgpt2", **analysis, **version}, indent=2
            )
        )
    if with_version:
        (folder / f"version_{session_id}.json").write_text(
            json.dumps({**version, "session_id": session_id})
        )
    if with_report:
        (folder / f"report_{session_id}.txt").write_text(
            "THERMAL-OPTIMIZATION COUPLING ANALYSIS REPORT\n"
        )
    return folder


def v03_lines(n: int, *, seed: int, start: dt.datetime = T0) -> list[str]:
    """A v0.3 monitor file of ``n`` GPU+CPU ticks from simulated inputs, as lines."""
    g = simulate_inputs(n, device="gpu", seed=seed, start=start)
    c = simulate_inputs(n, device="cpu", seed=seed + 100, start=start)
    return to_lines(v03_rows(g, c))


def experiment_runs(uri: str, experiment: str) -> list[Any]:
    """Every run of ``experiment`` in the store at ``uri`` (none if it does not exist)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])
