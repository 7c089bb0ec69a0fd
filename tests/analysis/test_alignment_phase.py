"""Detrended correlations do not hinge on where the telemetry ticks fall (issue 13).

A "recorded-like" stream: a smooth latent load L(t) (white noise smoothed over ``smooth_s``),
optimizer steps at an irregular rate other than 1 Hz whose grad_norm is ``5 + L(t) + noise``,
and a 1 Hz monitor with ±30 ms jitter whose RLE reading is ``0.5 - 0.05·L(t) + noise`` at its
tick times (a real, negative relationship, as in the lab's joint sessions). The telemetry clock
is then shifted by a fraction ``u`` of its period: the monitor ticks ``u`` s later and reads the
same process at its new tick times (its own noise per tick unchanged). The first ticks sit on the
old resampler's bin edges (0.5 s after the grid anchor), as in the lab's sessions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rle.analysis.align import interval_mean, resample, time_grid, training_interval
from rle.analysis.correlation import CorrelationSettings, Pair, correlate_device, detrend

T0 = 1_761_638_400.0
PAIR = Pair("train/grad_norm", "rle_smoothed")
FAST = CorrelationSettings(n_permutations=19, max_lag_s=2.0, seed=1)


class World:
    """One recorded-like session; :meth:`telemetry` samples it with the clock shifted."""

    def __init__(
        self, seed: int, seconds: int = 120, step_hz: float = 2.4, smooth_s: float = 3.0
    ) -> None:
        rng = np.random.default_rng(seed)
        dt = 0.02
        self.tf = np.arange(-30.0, seconds + 30.0, dt)
        kernel = np.exp(-0.5 * (np.arange(-4 * smooth_s, 4 * smooth_s + dt, dt) / smooth_s) ** 2)
        latent = np.convolve(rng.normal(size=self.tf.size), kernel, mode="same")
        self.latent = latent / latent.std()
        gaps = rng.gamma(20.0, 1.0 / (20.0 * step_hz), size=int(seconds * step_hz * 1.3) + 10)
        t = 5.0 + np.cumsum(gaps)
        t = t[t < seconds]
        g = 5.0 + np.interp(t, self.tf, self.latent) + 0.3 * rng.normal(size=t.size)
        self.train = pd.DataFrame(
            {"time_s": T0 + t, "train/grad_norm": g},
            index=pd.Index(np.arange(1, t.size + 1), name="step"),
        )
        iv = training_interval(self.train.reset_index()[["step", "time_s"]])
        assert iv is not None
        self.interval = iv
        n = seconds + 12
        # ticks 0.5 s after the grid anchor (the lab's bin edges), jittered
        first = iv.start_s - T0 - 4.5
        self.ticks = first + np.arange(n, dtype=float) + rng.normal(scale=0.03, size=n)
        self.noise = 0.002 * rng.normal(size=n)

    def telemetry(self, shift_s: float) -> pd.DataFrame:
        tt = self.ticks + shift_s
        y = 0.5 - 0.05 * np.interp(tt, self.tf, self.latent) + self.noise
        return pd.DataFrame({"time_s": T0 + tt, "rle_smoothed": y})


def r_diff(world: World, shift_s: float) -> tuple[float, int]:
    """pearson_diff of grad_norm vs rle_smoothed through the real pipeline, and its n."""
    out = correlate_device(
        "r", "gpu_0", world.train, world.telemetry(shift_s), world.interval, [PAIR], FAST, None
    )
    (row,) = [r for r in out.rows if r["method"] == "pearson_diff"]
    return float(row["r"]), int(row["n"])


def r_diff_bin_means(world: World, shift_s: float) -> float:
    """The former alignment: telemetry by the mean of the samples in ±0.5 s bins."""
    grid = time_grid(world.interval.start_s, world.interval.end_s, 1.0)
    dev = world.telemetry(shift_s)
    x = detrend(resample(world.train["time_s"], world.train["train/grad_norm"], grid), "difference")
    y = detrend(resample(dev["time_s"], dev["rle_smoothed"], grid), "difference")
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    fraction=st.floats(0.0, 0.999),
    step_hz=st.sampled_from([1.5, 2.4, 4.0, 10.0]),
)
def test_a_sub_period_clock_shift_moves_the_differenced_r_by_less_than_0_05(
    seed: int, fraction: float, step_hz: float
) -> None:
    world = World(seed, step_hz=step_hz)
    r0, n0 = r_diff(world, 0.0)
    r1, n1 = r_diff(world, fraction * 1.0)
    assert r0 < -0.2  # the planted relationship is there
    assert abs(r1 - r0) < 0.05
    assert abs(n1 - n0) <= 2  # the same telemetry samples, give or take one at each end


def test_the_former_bin_means_fail_the_same_property() -> None:
    """The property can fail: bin means of the samples move r by far more than 0.05."""
    worst_old, worst_new = 0.0, 0.0
    for seed in range(6):
        world = World(seed)
        old0, new0 = r_diff_bin_means(world, 0.0), r_diff(world, 0.0)[0]
        for u in np.linspace(0.05, 0.95, 10):
            worst_old = max(worst_old, abs(r_diff_bin_means(world, u) - old0))
            worst_new = max(worst_new, abs(r_diff(world, u)[0] - new0))
    assert worst_old > 0.05
    assert worst_new < 0.05


def test_n_counts_distinct_telemetry_samples_not_grid_points() -> None:
    world = World(3, seconds=60)
    dev = world.telemetry(0.0)
    fast = CorrelationSettings(n_permutations=19, max_lag_s=1.0, resample_hz=5.0, block_s=2.0)
    out = correlate_device("r", "gpu_0", world.train, dev, world.interval, [PAIR], fast, None)
    rows = pd.DataFrame(out.rows)
    diff = rows[rows["method"] == "pearson_diff"].iloc[0]
    inside = dev[
        (dev["time_s"] >= world.interval.start_s) & (dev["time_s"] <= world.interval.end_s)
    ]
    # a 5 Hz grid has ~5 points per 1 Hz sample; n stays the number of samples behind them
    assert diff["n"] <= len(inside) + 1
    assert diff["n"] >= len(inside) - 2
    (al,) = out.alignment
    assert al["grid_points_with_value"] > 4 * diff["n"]
    assert al["telemetry_samples"] == len(inside)
    assert al["median_period_s"] == pytest.approx(1.0, abs=0.05)
    lag_n = rows[rows["method"] == "xcorr_diff"]["n"]
    assert (lag_n <= diff["n"]).all()


def test_interval_mean_on_known_values() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0])
    v = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0])
    grid = np.arange(0.0, 12.0, 1.0)
    gs = interval_mean(t, v, grid, max_gap_s=3.0)
    # a linear series averages to itself over a centred bin; half-covered end bins use their half
    assert gs.values[1:3].tolist() == pytest.approx([1.0, 2.0])
    assert gs.values[0] == pytest.approx(0.25)  # [0, 0.5] of the curve: mean 0.25
    assert np.isnan(gs.values[4:10]).all()  # the 7 s gap is not interpolated across
    assert gs.lo[1] == 0
    assert gs.hi[1] == 2
    assert gs.n_samples == 6
    # a sample on a bin edge: both neighbouring bins see it, no bin is empty or doubled
    edge = interval_mean([0.5, 1.5, 2.5, 3.5], [1.0, 3.0, 1.0, 3.0], np.array([1.0, 2.0, 3.0]))
    assert np.allclose(edge.values, [2.0, 2.0, 2.0])
