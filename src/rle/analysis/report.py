"""The evaluation's ``report.md`` and terminal table: every number with the method behind it.

Pure string building from the evaluation's frames (no MLflow, no plotting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from rle.analysis.correlation import CorrelationSettings, SpikeSettings
from rle.analysis.fingerprint import THROTTLE_MASK, ClassifierResult

__all__ = ["fingerprint_table", "fmt", "legacy_section", "markdown_table", "render_report"]

TERMINAL_COLUMNS: dict[str, str] = {
    "group": "workload",
    "device": "device",
    "n_runs": "runs",
    "n_samples": "samples",
    "duration_s": "train s",
    "util_mean_percentage": "util %",
    "power_mean_watts": "power W",
    "power_p95_watts": "p95 W",
    "temperature_mean_celsius": "temp °C",
    "temperature_p95_celsius": "p95 °C",
    "energy_per_step_joules": "J/step",
    "samples_per_second": "samples/s",
    "rle_mean": "RLE mean",
    "rle_std": "RLE std",
    "collapse_events": "collapses",
    "collapse_fraction": "coll. frac",
    "throttle_fraction": "throttle",
}
"""Fingerprint columns shown on the terminal and in the report's summary table, with headers."""


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a table: ``N/A`` for NaN/None, 3 significant digits, ints as ints.

    Args:
        value: Anything.
        digits: Significant digits for floats.

    Returns:
        The text.
    """
    if value is None:
        return "N/A"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "N/A"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return fmt(f, digits)


def markdown_table(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        frame: The rows.
        columns: ``{column: header}`` to show (default all columns, named as they are).

    Returns:
        The table text (``_(none)_`` for an empty frame).
    """
    cols = dict(columns) if columns else {c: c for c in frame.columns}
    cols = {c: h for c, h in cols.items() if c in frame.columns}
    if frame.empty or not cols:
        return "_(none)_\n"
    lines = ["| " + " | ".join(cols.values()) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = [fmt(row[c]).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fingerprint_table(groups: pd.DataFrame, width: int = 200) -> str:
    """The workload fingerprint table for the terminal.

    Args:
        groups: Aggregated fingerprint rows.
        width: Line width.

    Returns:
        Plain-text table.
    """
    cols = {c: h for c, h in TERMINAL_COLUMNS.items() if c in groups.columns}
    if groups.empty:
        return "(no fingerprints)"
    view = pd.DataFrame({h: [fmt(v) for v in groups[c]] for c, h in cols.items()})
    return str(view.to_string(index=False, line_width=width))


def _methods(settings: CorrelationSettings, spikes: SpikeSettings, group_by: str) -> str:
    d = settings.detrend_label
    return f"""## Methods (how every number above was computed)

**Time axis and interval.** Each optimizer step's time is the wall-clock timestamp MLflow stored
with its `train/*` metrics (UTC epoch s, ms resolution); telemetry samples carry their own UTC
epoch seconds (`wall_time_s`). Only the **training interval** is analysed: from the first logged
step's time minus one median step interval to the last logged step's time. Samples before and
after it are the idle head and tail (`idle_head_s`, `idle_tail_s`), reported, never analysed.
Devices are analysed separately, never pooled (CPU rows and each GPU's rows apart).

**Fingerprints** (`fingerprints.csv`; per run and device, then per `{group_by}` and device).
`n_samples`: telemetry samples in the training interval (with `source=step_metrics`, runs without
the sample artifact, each logged step's window mean counts as one sample). `duration_s`: length
of the training interval. Utilisation (%), power (W), temperature (°C), SM clock (MHz): mean and
5th/50th/95th percentiles (NumPy linear interpolation) of the samples. `energy_joules`: the
device's energy counter interpolated at the interval's ends (`counter`), else the sum of the
per-window energy deltas of the steps inside it (`window_sum`), else the trapezoidal integral of
power over time (`power_integral`). `energy_per_step_joules` = energy / optimizer steps;
`energy_per_sample_joules` = energy / training samples, where training samples =
Σ `train/samples_per_second` × step interval. `samples_per_second`, `tokens_per_second`: mean of
the logged per-step values. RLE mean/std (ddof = 1)/min/max of `rle_smoothed`. Collapse
events/seconds/fraction: `rle.metric.collapse_summary` on the device's 0/1 collapse series inside
the interval (rising edges; each sample stands for the time to the next one); without a collapse
series, the run's logged `rle/<device>/collapse_*` values (whole run). `throttle_fraction`: share
of samples whose NVML clock-event reasons include any of mask 0x{THROTTLE_MASK:02x} (SW power
cap, HW slowdown, SW/HW thermal, power brake). Aggregated rows pool the samples of the group's
runs for percentiles, RLE and throttle statistics; they sum counts, durations, energy, steps,
samples and collapse events/seconds; energy per step/sample is total energy over total
steps/samples; throughput is duration-weighted; collapse fraction = total collapse seconds /
total duration.

**Correlations** (`correlations.csv`; `correlation.method={settings.method}`). Pairs are always
x = a training series, y = a hardware series of one device.
- `pearson`, `spearman` (lag 0): the telemetry mapped onto the step times by
  `{settings.align}`; `n` is the number of **distinct telemetry samples** behind the aligned
  values (not the number of steps); the p-value is the two-sided t test with `n − 2` degrees of
  freedom. It ignores autocorrelation and shared trends: read it as descriptive only.
- `pearson_{d}`, `spearman_{d}` (lag 0): both series put on one {settings.resample_hz:g} Hz grid
  over the training interval, anchored at its start (**alignment**): the training series by the
  mean of the steps in each bin (empty bins between filled ones interpolated across up to 2 bins),
  the telemetry by the **time average of its linear interpolant over each bin** (no sample is ever
  "in" or "out" of a bin, so samples sitting on bin edges leave no empty or doubled bins and a
  shift of the telemetry clock by part of a sample period moves the values continuously; bins
  touching a gap of more than 3 sample periods are N/A); then {settings.detrend} detrended. `n` is
  the number of **distinct telemetry samples** behind the grid values used (see the alignment
  table above). p-value from a block permutation test: the hardware series is cut
  into {settings.block_s:g} s blocks whose order is shuffled ({settings.n_permutations}
  permutations, seed {settings.seed}); p = (1 + #null |r| ≥ observed |r|) / (1 + permutations).
  Spearman is the same test on ranks. Fewer than {settings.min_blocks} blocks: p-value N/A.
- `xcorr_{d}` (one row per lag; `n` = distinct telemetry samples at that lag): same series,
  r = corr(x(t), y(t + lag)) for lags
  −{settings.max_lag_s:g} … +{settings.max_lag_s:g} s in steps of {1 / settings.resample_hz:g} s.
  **Sign convention: lag > 0 means the hardware series follows the training series by lag
  seconds.** Per-lag p-values from the same block permutation null at that lag (not corrected for
  the number of lags).
- `xcorr_{d}_peak`: the lag with the largest |r|; its p-value compares that maximum with the
  permutation null of the maximum |r| over all lags (corrected for looking at many lags).
- `spike_collapse`: grad_norm spikes are steps with grad_norm > mean + {spikes.k:g}·std
  (ddof = 1, over the training interval); consecutive spike steps form one spike, timed at its
  largest value (`n_spikes`); the lab's own count, **every step** above the threshold, is
  `n_spike_steps` ("steps above"). A spike is matched when a collapse event of the device starts within
  ±{spikes.window_s:g} s. `r` holds the hit rate (matched spikes / spikes), `n` the number of
  spikes; chance rate = fraction of the training interval within ±{spikes.window_s:g} s of an
  event start, expected matches = spikes × chance rate, p-value = P(X ≥ matched) for
  X ~ Binomial(spikes, chance rate).
- A row whose statistic is undefined has `r`/`p_value` N/A and a note starting `N/A:` that says
  why (constant series, too few points — fewer than {settings.min_points} pairs —, no series on
  the device, RLE built from placeholder inputs, collapse detection disabled for lack of a
  temperature sensor, v2 collapse flags discarded by design, no collapse events).

**Input provenance.** Per run and device, power and temperature are judged from the importer's
source tags (`power_source`/`temp_source`, per row or per run) and from the data: an input equal
to a monitor placeholder constant (125 W, 50 °C) in every one of at least 30 samples is a
placeholder. Placeholder (and estimated) readings are never described; a device with a
placeholder input, or tagged `rle.excluded.<device>`, has its RLE and collapse flags removed:
fingerprint RLE columns and every RLE correlation are N/A with the reason (`provenance.csv`,
fingerprint column `flags`).

**Sanity check.** Runs whose `train/loss` and `train/grad_norm` are bit-identical at every step
are flagged, one warning per group, whatever their `{group_by}` labels: with different labels
their "workloads" did not differ in training; with the same label the same training log was
recorded or imported more than once, so they are not independent evidence.

**Classifier.** One feature vector per run: each device's fingerprint features among
`util_mean/p95`, `power_mean/p95`, `temperature_mean/p95`, `sm_clock_mean`, `energy_per_step`,
`samples_per_second`, `rle_mean/std`, `collapse_fraction`, `throttle_fraction` (features missing or
constant for any run are dropped). Nearest centroid on features standardised with the training
fold's mean and standard deviation; leave-one-run-out accuracy and confusion matrix (rows: true,
columns: predicted); chance = share of the most frequent label. Runs only when at least two
workloads have at least two runs each.
"""


def render_report(
    *,
    header: Mapping[str, str],
    runs: pd.DataFrame,
    skipped: pd.DataFrame,
    notes: Sequence[str],
    warnings: Sequence[str],
    groups: pd.DataFrame,
    fingerprints: pd.DataFrame,
    correlations: pd.DataFrame,
    spikes: pd.DataFrame,
    classifier: ClassifierResult,
    settings: CorrelationSettings,
    spike_settings: SpikeSettings,
    group_by: str,
    files: Sequence[str],
    sections: Sequence[str] = (),
    alignment: pd.DataFrame | None = None,
    provenance: pd.DataFrame | None = None,
    plot_notes: Sequence[str] = (),
) -> str:
    """Render ``report.md``.

    Args:
        header: Key/value lines at the top (tracking URI, selection, evaluation run id, ...).
        runs: Analysed runs (``run_id``, ``run_name``, ``group``, ``status``, ``source``,
            ``n_steps``, ``duration_s``, ``devices``).
        skipped: What was skipped (``run_id``, ``what``, ``reason``).
        notes: Remarks from the selection (runs still running, unknown experiments).
        warnings: Sanity-check warnings.
        groups: Aggregated fingerprints.
        fingerprints: Per-run fingerprints.
        correlations: All correlation rows.
        spikes: Spike–collapse table.
        classifier: Classifier outcome.
        settings: Correlation settings (for the methods section).
        spike_settings: Spike settings.
        group_by: Grouping key of the fingerprints.
        files: Artifact file names.
        sections: Further Markdown sections, placed after the correlations (e.g.
            :func:`legacy_section`).
        alignment: ``alignment.csv`` rows (how each hardware series was put on the grid).
        provenance: ``provenance.csv`` rows (placeholder inputs and excluded RLE).
        plot_notes: One line per plot not written (it would have been empty) or drawn without
            some of its panels, saying what is missing and why (:mod:`rle.analysis.plots`).

    Returns:
        The Markdown text.
    """
    d = settings.detrend_label
    out = ["# RLE evaluation report\n"]
    out += [f"- **{k}**: {v}" for k, v in header.items()]
    out.append("")
    out.append(f"## Selection\n\n{len(runs)} run(s) analysed.\n")
    out.append(
        markdown_table(
            runs,
            {
                "run_id": "run",
                "run_name": "name",
                "group": group_by,
                "status": "status",
                "source": "telemetry",
                "devices": "devices",
                "n_steps": "steps",
                "duration_s": "training s",
            },
        )
    )
    out.append("### Skipped or partial\n")
    out.append(markdown_table(skipped, {"run_id": "run", "what": "what", "reason": "reason"}))
    if notes:
        out.append("\n".join(f"- {n}" for n in notes) + "\n")
    out.append("## Warnings\n")
    out.append(("\n".join(f"- ⚠ {w}" for w in warnings) if warnings else "_(none)_") + "\n")
    out.append("## Input provenance (flags)\n")
    out.append(
        "Where each device's power and temperature came from, and whether its RLE is kept. "
        "Placeholder inputs and an RLE built from them are kept out of fingerprints and "
        "correlations (their cells are N/A with this reason).\n"
    )
    prov = provenance if provenance is not None else pd.DataFrame()
    if len(prov):
        prov = prov.assign(run_id=prov["run_id"].astype(str).str[:8])
    out.append(
        markdown_table(
            prov,
            {
                "run_id": "run",
                "device": "device",
                "power": "power",
                "temperature": "temperature",
                "rle": "RLE",
                "collapse": "collapse",
                "evidence": "evidence",
            },
        )
    )
    out.append(f"## Fingerprints per {group_by} and device\n")
    out.append(
        markdown_table(
            groups,
            {"group": group_by, **{k: v for k, v in TERMINAL_COLUMNS.items() if k != "group"}},
        )
    )
    out.append(
        "\nAll columns (quantiles, energy per sample, idle time, ...) are in `fingerprints.csv`.\n"
    )
    out.append("### Per run\n")
    out.append(
        markdown_table(
            fingerprints,
            {
                "run_id": "run",
                **{k: v for k, v in TERMINAL_COLUMNS.items() if k not in ("n_runs",)},
            },
        )
    )
    out.append("## Alignment\n")
    out.append(
        "Detrended and lagged statistics put both series on one grid anchored at the start of "
        "the training interval: the training series by the mean of its steps in each bin, the "
        "telemetry by the time average of its linear interpolant over each bin, so their result "
        "does not hinge on where the bins fall relative to the samples. `edge samples`: samples "
        "within 5 % of a spacing of a bin edge, where the former bin-mean resampling left empty "
        "and doubled bins. Every `n` in the correlation tables is a count of distinct telemetry "
        "samples, never of steps or grid points.\n"
    )
    al = alignment if alignment is not None else pd.DataFrame()
    if len(al):
        al = al.assign(run_id=al["run_id"].astype(str).str[:8])
    out.append(
        markdown_table(
            al,
            {
                "run_id": "run",
                "device": "device",
                "y": "series",
                "telemetry_samples": "telemetry samples",
                "median_period_s": "median period s",
                "sample_phase_s": "sample phase s",
                "grid_hz": "grid Hz",
                "grid_points_with_value": "grid points with a value",
                "edge_samples": "edge samples",
            },
        )
    )
    out.append("")
    out.append("## Correlations (per run and device)\n")
    summary = _correlation_summary(correlations, d)
    out.append(
        "Raw r is descriptive (trend-sensitive); judge coupling by the detrended r and its "
        "block-permutation p, and by the peak lag's family-wise p. Lag > 0: hardware follows "
        "training.\n"
    )
    out.append(markdown_table(summary))
    out.append("\nEvery row, lag and note is in `correlations.csv`.\n")
    out += list(sections)
    out.append("## Spike–collapse coupling\n")
    out.append(
        markdown_table(
            spikes,
            {
                "run_id": "run",
                "device": "device",
                "n_spikes": "spikes (merged)",
                "n_spike_steps": "steps above (lab's count)",
                "n_events": "events",
                "matched_spikes": "matched spikes",
                "matched_events": "matched events",
                "expected_matched": "expected by chance",
                "p_value": "p",
                "note": "note",
            },
        )
    )
    out.append("## Workload classifier\n")
    if classifier.available:
        out.append(
            f"Leave-one-run-out accuracy **{fmt(classifier.accuracy)}** over "
            f"{len(classifier.predictions)} runs (chance {fmt(classifier.chance)}); "
            f"{len(classifier.features)} features: {', '.join(f'`{f}`' for f in classifier.features)}.\n"
        )
        conf = classifier.confusion.copy()
        conf.insert(0, "true \\ predicted", conf.index.astype(str))
        out.append(markdown_table(conf.reset_index(drop=True)))
        if classifier.reason:
            out.append(f"\n{classifier.reason}\n")
    else:
        out.append(f"Not run: {classifier.reason}.\n")
    out.append(_methods(settings, spike_settings, group_by))
    out.append("## Plots\n")
    plots = [f for f in files if f.endswith(".png")]
    out.append(
        (f"Written: {', '.join(f'`{f}`' for f in plots)}.\n" if plots else "No plot written.\n")
        + ("\n" + "\n".join(f"- {n}" for n in plot_notes) + "\n" if plot_notes else "")
    )
    out.append("## Files\n")
    out.append("\n".join(f"- `{f}`" for f in files) + "\n")
    return "\n".join(out)


def _correlation_summary(correlations: pd.DataFrame, d: str) -> pd.DataFrame:
    if correlations.empty:
        return pd.DataFrame()
    rows = []
    for (run_id, device, x, y), part in correlations.groupby(
        ["run_id", "device", "x", "y"], sort=False
    ):
        if y == "collapse_events":
            continue
        by = {m: r for m, r in part.groupby("method")}

        def get(method: str, col: str, by: dict[Any, pd.DataFrame] = by) -> Any:
            frame = by.get(method)
            return frame[col].iloc[0] if frame is not None and len(frame) else math.nan

        note = get(f"pearson_{d}", "note")
        rows.append(
            {
                "run": str(run_id)[:8],
                "device": device,
                "pair": f"{y} vs {x.removeprefix('train/')}",
                "r raw": get("pearson", "r"),
                "n (samples)": get("pearson", "n"),
                f"r {d}": get(f"pearson_{d}", "r"),
                f"p {d} (perm)": get(f"pearson_{d}", "p_value"),
                "peak lag s": get(f"xcorr_{d}_peak", "lag_s"),
                "peak r": get(f"xcorr_{d}_peak", "r"),
                "peak p (max-|r| null)": get(f"xcorr_{d}_peak", "p_value"),
                "note": note if isinstance(note, str) and "N/A" in note else "",
            }
        )
    return pd.DataFrame(rows)


_LEGACY_PAIRS: dict[str, tuple[str, str]] = {
    "gpu_grad_rle": ("train/grad_norm", "rle_smoothed"),
    "gpu_temp_grad": ("train/grad_norm", "temp_c"),
    "gpu_loss_rle": ("train/loss", "rle_smoothed"),
}
"""The lab's correlation fields and the ``default`` pairs that measure the same thing."""

_WHAT_CHANGED = """### What changed and why (docs/rle-metric.md §9)

- **Devices are never pooled (C3).** `legacy_joint_session` uses the v2 GPU rows only, but the
  lab's headline lag numbers (`legacy_lag_report`) interleave CPU and GPU rows in one series with
  timestamps truncated to whole seconds. The default method correlates each device separately.
- **N counts telemetry samples, not training rows (C1).** `aligned_samples` is the number of
  training-log rows (the summary entry included), matched or not; about 2.4 optimizer steps share
  each 1 Hz GPU sample, so the same reading is counted several times and p-values are too small.
  The default method's `n` is the number of distinct telemetry samples, and its p-values come from
  a block-permutation null.
- **Lags are seconds, with one sign convention (C2).** The lab's lags are training-step rows
  (≈ the step interval each, or ≈ 0.5 s for interleaved rows) labelled as seconds, and its two
  analyses give the same sign opposite meanings (`legacy_joint_session`: k > 0 pairs grad_norm(t)
  with rle_smoothed(t − k rows); `legacy_lag_report`: k > 0 is "grad_norm leads"). The default
  method resamples both series to a common grid in seconds; lag L > 0 means the hardware series
  follows the training series by L seconds.
- **Trends are removed first (C5).** grad_norm falls with the step while the GPU warms, so a raw r
  between them (temperature vs grad_norm above all) mostly measures two trends. The default method
  correlates first differences (or straight-line residuals) and tests against a permutation null;
  compare its detrended r with the lab's raw r.
- **Only the training interval counts (C7).** The lab's merge keeps every training row, including
  the summary entry; the default method uses the samples between the first and last optimizer
  step and reports the idle head and tail separately.
"""


def _default_row(correlations: pd.DataFrame, run_id: str, x: str, y: str, d: str) -> dict[str, Any]:
    """The default analysis of one pair on the run's GPU device(s), as report cells."""
    empty: dict[str, Any] = {
        "device": "-",
        "r raw": math.nan,
        "n (samples)": math.nan,
        f"r {d}": math.nan,
        f"p {d} (perm)": math.nan,
        "peak lag s": math.nan,
        "peak r": math.nan,
    }
    if correlations.empty:
        return empty
    part = correlations[
        (correlations["run_id"] == run_id)
        & (correlations["x"] == x)
        & (correlations["y"] == y)
        & correlations["device"].astype(str).str.startswith("gpu")
    ]
    if part.empty:
        return empty
    device = sorted(set(part["device"].astype(str)))[0]
    part = part[part["device"] == device]
    by = {str(m): r for m, r in part.groupby("method")}

    def get(method: str, col: str) -> Any:
        frame = by.get(method)
        return frame[col].iloc[0] if frame is not None and len(frame) else math.nan

    return {
        "device": device,
        "r raw": get("pearson", "r"),
        "n (samples)": get("pearson", "n"),
        f"r {d}": get(f"pearson_{d}", "r"),
        f"p {d} (perm)": get(f"pearson_{d}", "p_value"),
        "peak lag s": get(f"xcorr_{d}_peak", "lag_s"),
        "peak r": get(f"xcorr_{d}_peak", "r"),
    }


def _side_by_side(
    sessions: pd.DataFrame,
    runs: pd.DataFrame,
    correlations: pd.DataFrame,
    d: str,
) -> str:
    """The lab's numbers and the default analysis of the same run, pair by pair."""
    if sessions.empty or "reproduced" not in sessions:
        return "_(none)_\n"
    step_s: dict[str, float] = {}
    for r in runs.to_dict("records"):
        n = int(r.get("n_steps") or 0)
        if n > 1:
            step_s[str(r["run_id"])] = float(r["duration_s"]) / (n - 1)
    rows = []
    for s in sessions.to_dict("records"):
        rid, rep = str(s["run_id"]), s.get("reproduced")
        if not isinstance(rep, Mapping):
            continue
        for name, (x, y) in _LEGACY_PAIRS.items():
            rows.append(
                {
                    "run": rid[:8],
                    "pair": f"{y} vs {x.removeprefix('train/')}",
                    "lab r (raw, GPU rows)": rep["correlations"][name],
                    "lab N (training rows) / peak lag": rep["aligned_samples"],
                    **_default_row(correlations, rid, x, y, d),
                }
            )
        lag = int(rep["peak_lag"])
        per_row = step_s.get(rid, math.nan)
        default = _default_row(correlations, rid, "train/grad_norm", "rle_smoothed", d)
        rows.append(
            {
                "run": rid[:8],
                "pair": "peak lag (rle_smoothed vs grad_norm)",
                "lab r (raw, GPU rows)": rep["peak_correlation"],
                "lab N (training rows) / peak lag": f"{lag} rows, labelled {lag} s"
                + (f" (≈ {fmt(lag * per_row)} s of steps)" if lag and per_row == per_row else ""),
                **default,
            }
        )
    return markdown_table(pd.DataFrame(rows))


def _code(value: Any) -> str:
    """Verbatim cell text (ids and full-precision numbers that :func:`fmt` would round)."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = f"{value:.10g}"
    return f"`{value}`"


def _ids(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    if "run_id" in out:
        out["run_id"] = out["run_id"].astype(str).str[:8]
    for col in ("session_id", "session_dir"):
        if col in out:
            out[col] = [_code(v) for v in out[col]]
    return out


def legacy_section(
    method: str,
    *,
    comparison: pd.DataFrame,
    sessions: pd.DataFrame,
    runs: pd.DataFrame,
    correlations: pd.DataFrame,
    settings: CorrelationSettings,
    tolerance: float,
    lag_report: Mapping[str, Any] | None = None,
    lag_rows: pd.DataFrame | None = None,
    spikes: pd.DataFrame | None = None,
    spike_k: float = 1.0,
) -> str:
    """The report section of a legacy method (``docs/rle-metric.md`` §8.3).

    Args:
        method: ``legacy_joint_session`` or ``legacy_lag_report``.
        comparison: ``legacy_joint_session.csv`` rows (``run_id``, ``session_id``, ``field``,
            ``reproduced``, ``stored``, ``abs_diff``, ``match``).
        sessions: One row per imported session read (``run_id``, ``session_id``,
            ``session_dir``, ``training_rows``, ``gpu_rows``, ``cpu_rows``, ``has_stored``,
            ``reproduced``, ``agrees``).
        runs: The default analysis's analysed runs (for the step interval).
        correlations: The default analysis's ``correlations.csv`` rows of the same runs.
        settings: Settings of the default analysis.
        tolerance: Largest absolute difference that matches.
        lag_report: The reproduced lag report (with ``summary``), ``legacy_lag_report`` only.
        lag_rows: ``legacy_lag_report.csv`` rows.
        spikes: ``legacy_spikes.csv`` rows (the lab's spike counts per session).
        spike_k: The spike threshold's k.

    Returns:
        Markdown text.
    """
    d = settings.detrend_label
    out = [f"## Legacy method: `{method}` (the lab's analysis, reproduced)\n"]
    info = {
        "run_id": "run",
        "session_id": "session",
        "session_dir": "folder",
        "training_rows": "training-log rows",
        "gpu_rows": "v2 GPU rows",
        "cpu_rows": "v2 CPU rows",
    }
    if method == "legacy_joint_session":
        n = len(sessions)
        agree = int(sessions["agrees"].astype(bool).sum()) if "agrees" in sessions else 0
        out.append(
            "Recomputed by `rle.analysis.legacy.legacy_joint_session` from each imported run's "
            "original files (`original/rle_data_<id>.csv`, `original/training_log_<id>.json`) "
            "with the lab's choices: v2 GPU rows only; as-of merge of every training-log row "
            "(summary entry included) to the nearest GPU row within 2.0 s; pandas Pearson on "
            "grad_norm vs rle_smoothed, temp_c vs grad_norm, loss vs rle_smoothed; lags −3..3 in "
            "training rows. Compared field by field with the stored `analysis_<id>.json` "
            f"(tolerance {tolerance:g}): **{agree} of {n} session(s) agree**. "
            "All rows are in `legacy_joint_session.csv`.\n"
        )
        out.append(markdown_table(_ids(sessions), info))
        out.append("")
        out.append(
            markdown_table(
                _ids(comparison).assign(
                    reproduced=[_code(v) for v in comparison["reproduced"]],
                    stored=[_code(v) for v in comparison["stored"]],
                ),
                {
                    "run_id": "run",
                    "session_id": "session",
                    "field": "field",
                    "reproduced": "reproduced",
                    "stored": "stored (analysis_<id>.json)",
                    "abs_diff": "|diff|",
                    "match": "match",
                },
            )
        )
        out.append("\n### The corrected default analysis of the same data\n")
        out.append(
            "The same runs analysed by `correlation.method=default` (imported samples from "
            "the raw samples (`telemetry/samples/`), `train/*` metrics; placeholder readings dropped): per "
            f"device, training interval only, raw r with n = distinct telemetry samples, r of the "
            f"{settings.detrend} series with its block-permutation p, and the peak of the lagged "
            f"correlation in seconds (±{fmt(settings.max_lag_s)} s; lag > 0: hardware follows "
            "training). N/A: the default method had too few samples or no such series (see "
            "`correlations.csv`).\n"
        )
        out.append(_side_by_side(sessions, runs, correlations, d))
    else:
        report = lag_report or {}
        out.append(
            "Recomputed by `rle.analysis.legacy.legacy_lag_report` over the selected imported "
            "sessions, with the lab's choices: **all** v2 rows (CPU and GPU interleaved) at their "
            "timestamp truncated to whole seconds; as-of merge to the nearest training entry "
            "within 2 s; `scipy.stats.pearsonr` for lags −3..3 in mixed-device rows (k > 0 "
            'labelled "grad_norm leads"); sessions with fewer than 10 aligned rows skipped; '
            "session type from the folder name. The lab's `lag_analysis_report.json` spans many "
            "recordings and is not part of a bundle, so there is no stored copy to compare with: "
            "compare `legacy_lag_report.json` with the published report yourself. "
            f"{report.get('total_sessions', 0)} session(s) reproduced.\n"
        )
        out.append(markdown_table(_ids(sessions), info))
        out.append("")
        if lag_rows is not None and len(lag_rows):
            peaks = lag_rows[lag_rows["is_peak"].astype(bool)]
            out.append(
                markdown_table(
                    _ids(peaks),
                    {
                        "run_id": "run",
                        "session_dir": "folder",
                        "session_type": "type",
                        "samples": "samples (mixed rows)",
                        "lag_rows": "peak lag (rows, labelled s)",
                        "correlation": "peak r",
                        "p_value": "p",
                        "interpretation": "lab's label",
                    },
                )
            )
        summary = report.get("summary") or {}
        if summary:
            out.append("\nPer-type summary (as the lab printed it):\n")
            table = pd.DataFrame([{"type": k, **v} for k, v in summary.items()])
            out.append(markdown_table(table))
        out.append("\n### The corrected default analysis of the same data\n")
        out.append(
            "Per device (never pooled), in seconds, detrended, with a permutation null: the "
            "default analysis of the same runs is in the correlation tables above "
            "(`correlations.csv`).\n"
        )
    out.append(_spike_section(spikes, spike_k))
    out.append(_WHAT_CHANGED)
    return "\n".join(out)


def _spike_section(spikes: pd.DataFrame | None, k: float) -> str:
    """The lab's spike counts of each session's training log, beside rle's merged spikes."""
    text = [
        "### The lab's spike counts (reproduced)\n",
        "`rle.analysis.legacy.legacy_spikes` on each session's training log (summary entry "
        f"ignored): threshold = mean + {k:g}·std of grad_norm (ddof = 1), and, as the lab "
        "counted, **every step** above it is a spike (`spike steps`). rle's spike–collapse "
        "matching merges consecutive spike steps into one spike (`merged spikes`). All rows are "
        "in `legacy_spikes.csv`.\n",
    ]
    frame = spikes if spikes is not None else pd.DataFrame()
    text.append(
        markdown_table(
            _ids(frame),
            {
                "run_id": "run",
                "session_id": "session",
                "steps": "steps with grad_norm",
                "mean_grad_norm": "mean grad_norm",
                "threshold": "threshold",
                "spike_steps": "spike steps (lab)",
                "merged_spikes": "merged spikes (rle)",
            },
        )
    )
    return "\n".join(text)
