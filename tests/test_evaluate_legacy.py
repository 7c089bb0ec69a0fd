"""Legacy correlation methods of rle.evaluate on joint sessions imported by rle.ingest (§8.3)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.analysis.legacy import legacy_joint_session, legacy_lag_report
from rle.errors import ConfigError
from rle.evaluate import LEGACY_COLUMNS, run_evaluation, settings_from_config, summary_text
from rle.ingest import DEFAULT_EXPERIMENT, run_ingest
from rle.paths import resolve_tracking
from rle.tracking.logger import create_run, end_run
from support import rle_lab_writers as W

SELECT = f"selection.experiment_names=[{DEFAULT_EXPERIMENT}]"
FAST = (
    SELECT,
    "evaluation.plots.enabled=false",
    "evaluation.correlation.n_permutations=99",
)


def _bundle(
    root: Path,
    name: str,
    session_id: str,
    seed: int,
    *,
    tamper: float = 0.0,
    train_seed: int | None = None,
) -> dict[str, Any]:
    """A joint-session folder whose analysis_<id>.json is what the lab's runner computed."""
    g = W.simulate_inputs(40, device="gpu", seed=seed, period_s=1.0)
    c = W.simulate_inputs(40, device="cpu", seed=seed + 1, period_s=1.0)
    lines = W.to_lines(W.v2_rows(c, g))
    t0 = g["timestamp"].iloc[0].timestamp()
    entries = W.training_entries(
        60, start_epoch_s=t0 + 9.0, seed=seed if train_seed is None else train_seed
    )
    rows = pd.read_csv(io.StringIO("\n".join([W.header("v2"), *lines])))
    analysis = legacy_joint_session(entries, rows)
    stored = json.loads(json.dumps(analysis))
    stored["correlations"]["gpu_grad_rle"] += tamper
    W.write_joint_session(root / name, session_id, lines, entries, analysis=stored)
    return {"entries": entries, "rows": rows, "analysis": analysis}


@pytest.fixture
def imported(tmp_path: Path) -> dict[str, Any]:
    """Two imported joint sessions (s2's stored gpu_grad_rle is off by 1e-3) and a plain run."""
    good = _bundle(tmp_path / "joint", "s1", "20251028_031500", seed=5)
    bad = _bundle(tmp_path / "joint", "s2", "20251028_041500", seed=7, tamper=1e-3)
    result = run_ingest([tmp_path / "joint"])
    location = resolve_tracking(None)
    _, plain = create_run(location, DEFAULT_EXPERIMENT, "not imported", {"workload": "synthetic"})
    end_run(location, plain, "FINISHED")
    runs = {str(r.run_id) for r in result.runs}
    assert len(runs) == 2
    return {"s1": good, "s2": bad, "plain": plain, "runs": runs}


def _evaluate(compose_cfg: Callable[..., DictConfig], *overrides: str) -> Any:
    return run_evaluation(compose_cfg(*FAST, *overrides, config_name="evaluate"))


def test_legacy_joint_session_reproduces_the_stored_analysis(
    compose_cfg: Callable[..., DictConfig], imported: dict[str, Any]
) -> None:
    result = _evaluate(compose_cfg, "evaluation=legacy_joint_session")
    print(summary_text(result))  # noqa: T201 (visible with -s)
    assert result.status == "FINISHED", result.message
    assert result.method == "legacy_joint_session"
    legacy = result.legacy
    assert list(legacy.columns) == list(LEGACY_COLUMNS)
    assert set(legacy["run_id"]) == imported["runs"]
    by_session = {sid: part.set_index("field") for sid, part in legacy.groupby("session_id")}
    assert set(by_session) == {"20251028_031500", "20251028_041500"}

    good = by_session["20251028_031500"]
    expected = imported["s1"]["analysis"]
    assert good["match"].all()
    assert (good["abs_diff"] <= 1e-6).all()
    assert good.loc["aligned_samples", "reproduced"] == expected["aligned_samples"] == 61
    for name, value in expected["correlations"].items():
        assert good.loc[f"correlations.{name}", "reproduced"] == pytest.approx(value, abs=1e-12)
        assert good.loc[f"correlations.{name}", "stored"] == pytest.approx(value, abs=1e-6)
    assert good.loc["peak_lag", "reproduced"] == expected["peak_lag"]
    assert good.loc["peak_correlation", "reproduced"] == pytest.approx(
        expected["peak_correlation"], abs=1e-6
    )
    assert good.loc["causal_order", "reproduced"] == expected["causal_order"]

    bad = by_session["20251028_041500"]  # the comparison notices a stored value that differs
    assert not bad.loc["correlations.gpu_grad_rle", "match"]
    assert bad.loc["correlations.gpu_grad_rle", "abs_diff"] == pytest.approx(1e-3, abs=1e-9)
    assert bad.drop(index="correlations.gpu_grad_rle")["match"].all()

    # the plain run is skipped with the reason; the corrected default analysis ran beside it
    skipped = result.skipped.set_index("run_id")
    assert "not an imported joint session" in skipped.loc[imported["plain"], "reason"]
    assert set(result.runs["run_id"]) == imported["runs"]
    corr = result.correlations
    assert {"gpu_0", "cpu"} <= set(corr["device"])
    raw = corr[(corr["device"] == "gpu_0") & (corr["method"] == "pearson")]
    assert (raw["n"] < 61).all()  # distinct telemetry samples, not training rows (C1)

    client = MlflowClient(resolve_tracking(None).uri)
    assert result.run_id is not None
    files = {Path(f.path).name for f in client.list_artifacts(result.run_id)}
    assert {"legacy_joint_session.csv", "report.md", "correlations.csv"} <= files
    csv = pd.read_csv(
        client.download_artifacts(result.run_id, "legacy_joint_session.csv", str(result.output_dir))
    )
    assert list(csv.columns) == list(LEGACY_COLUMNS)
    assert len(csv) == len(legacy)
    report = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "## Legacy method: `legacy_joint_session`" in report
    assert "**1 of 2 session(s) agree**" in report
    assert "The corrected default analysis of the same data" in report
    assert "(C1)" in report
    assert "(C5)" in report


def test_method_override_and_unknown_method(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg("evaluation.correlation.method=legacy_joint_session", config_name="evaluate")
    settings, _, _ = settings_from_config(cfg)
    assert settings.method == "default"  # the corrected analysis that runs beside it
    lag = compose_cfg("evaluation=legacy_lag_report", config_name="evaluate")
    assert lag.evaluation.correlation.method == "legacy_lag_report"
    assert lag.evaluation.correlation.max_lag_s == 10.0  # extends default
    with pytest.raises(ConfigError, match="valid choices: default, legacy_joint_session"):
        settings_from_config(
            compose_cfg("evaluation.correlation.method=nope", config_name="evaluate")
        )
    # no imported joint session among the selected runs: empty, with the reason
    location = resolve_tracking(None)
    _, plain = create_run(location, DEFAULT_EXPERIMENT, "not imported", {})
    end_run(location, plain, "FINISHED")
    result = run_evaluation(
        compose_cfg(
            *FAST, "evaluation.correlation.method=legacy_joint_session", config_name="evaluate"
        )
    )
    assert "is an imported joint session" in result.message
    assert list(result.skipped["run_id"]) == [plain]
    assert result.status == "EMPTY"


def test_legacy_lag_report(
    compose_cfg: Callable[..., DictConfig], imported: dict[str, Any]
) -> None:
    result = _evaluate(compose_cfg, "evaluation=legacy_lag_report")
    assert result.status == "FINISHED", result.message
    report = result.legacy_report
    assert report is not None
    expected = legacy_lag_report(
        {name: (imported[name]["entries"], imported[name]["rows"]) for name in ("s1", "s2")}
    )
    assert report["total_sessions"] == expected["total_sessions"] == 2
    for mine, theirs in zip(report["detailed_results"], expected["detailed_results"], strict=True):
        assert mine["session_dir"] == theirs["session_dir"]
        assert mine["samples"] == theirs["samples"]
        assert mine["peak_lag"] == theirs["peak_lag"]
        assert mine["peak_correlation"] == pytest.approx(theirs["peak_correlation"], abs=1e-6)
        for k, v in theirs["lag_correlations"].items():
            r = mine["lag_correlations"][k]["correlation"]
            assert (math.isnan(r) and math.isnan(v["correlation"])) or r == pytest.approx(
                v["correlation"], abs=1e-6
            )
    assert set(report["summary"]) == {"Unknown"}
    assert result.output_dir is not None
    rows = pd.read_csv(result.output_dir / "legacy_lag_report.csv")
    assert len(rows) == 2 * 7
    assert rows["is_peak"].sum() == 2
    text = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "## Legacy method: `legacy_lag_report`" in text


def test_imported_v2_sessions_flags_true_reasons_and_lab_spikes(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Issue 13: placeholder CPU RLE kept out, every N/A with its reason, identical logs warned."""
    _bundle(tmp_path / "joint", "a", "20251028_031500", seed=5)
    _bundle(tmp_path / "joint", "b", "20251028_041500", seed=9, train_seed=5)  # same log as a
    imported = run_ingest([tmp_path / "joint"])
    assert len(imported.runs) == 2
    result = _evaluate(compose_cfg, "evaluation=legacy_joint_session")
    assert result.status == "FINISHED", result.message

    prov = result.provenance.set_index(["run_id", "device"])
    cpu = prov.xs("cpu", level="device")
    assert (cpu["power"] == "placeholder").all()
    assert (cpu["temperature"] == "placeholder").all()
    assert (cpu["rle"] == "excluded").all()
    assert (prov.xs("gpu_0", level="device")["rle"] == "kept").all()

    fp = result.fingerprints.set_index("device")
    assert fp.loc["cpu", "rle_mean"].isna().all()  # out of the fingerprints
    assert fp.loc["cpu", "flags"].str.contains("RLE excluded").all()
    assert fp.loc["gpu_0", "rle_mean"].notna().all()

    corr = result.correlations
    cpu_rle = corr[(corr["device"] == "cpu") & (corr["y"] == "rle_smoothed")]
    assert len(cpu_rle)
    assert cpu_rle["r"].isna().all()
    assert cpu_rle["note"].str.contains("built from placeholder inputs").all()
    assert cpu_rle["note"].str.contains("0.468").all()
    cpu_temp = corr[(corr["device"] == "cpu") & (corr["y"] == "temp_c")]
    assert cpu_temp["note"].str.contains("placeholder constant").all()
    spikes = corr[corr["method"] == "spike_collapse"]
    assert spikes["note"].str.contains("v2 collapse flags are discarded by design").all()
    assert not spikes["note"].str.contains("temperature sensor").any()
    # n of every default row is a count of distinct telemetry samples (40 per device at most)
    assert (corr["n"] <= 40).all()
    # the CPU has no measured hardware series left to align (RLE, power, temperature removed)
    assert set(result.alignment["device"]) == {"gpu_0"}
    assert not result.alignment.duplicated(["run_id", "device", "y"]).any()

    (warning,) = result.warnings  # same training log under two runs, whatever the labels
    assert "bit-identical" in warning
    assert all(str(r.run_id)[:8] in warning for r in imported.runs)

    lab = result.legacy_spikes
    assert len(lab) == 2
    assert lab["spike_steps"].nunique() == 1  # the same log gives the same lab count
    assert (lab["spike_steps"] >= lab["merged_spikes"]).all()
    entries = W.training_entries(60, start_epoch_s=0.0, seed=5)
    grads = np.array([e["grad_norm"] for e in entries[:-1]])
    expected = int((grads > grads.mean() + grads.std(ddof=1)).sum())
    assert lab["spike_steps"].iloc[0] == expected

    assert result.output_dir is not None
    report = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "## Input provenance (flags)" in report
    assert "## Alignment" in report
    assert "time average of its linear interpolant" in report
    assert "The lab's spike counts (reproduced)" in report
    assert "v2 collapse flags are discarded by design" in report
    assert {"alignment.csv", "provenance.csv", "legacy_spikes.csv"} <= {
        p.name for p in result.output_dir.iterdir()
    }
