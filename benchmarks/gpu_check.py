"""Helper of ``benchmarks/gpu_check.sh`` (issue 17): session run, NVML sample cost, report.

Subcommands (the shell script calls them; each is usable alone):

``start``      create the check's *session run* in the MLflow store (tags: GPU model, driver, CUDA,
               torch, host) and print its run id; the environment also goes to ``env.json``.
``tests``      read the JUnit XML of ``pytest -m gpu`` and log the counts to the session run.
``nvml-cost``  time one sample of all fields of the project's ``NvmlGpuSource`` on cuda:0 (wall
               and CPU time, per field too), list the fields present and unsupported, log it all
               to the session run; without NVML it says "no NVML" and why.
``report``     read every run of the session back with ``mlflow.MlflowClient`` (``search_runs``,
               ``get_metric_history``; never the logs) and print/write the summary: step-time
               ratios telemetry on/off, utilisation and power per synthetic intensity vs target,
               J/step and samples/J, NVML fields present/absent, throttle reasons seen, NVML
               sample cost, each against its goal. Writes ``summary.txt`` and ``summary.json``
               under ``--out`` and logs them (and headline metrics) to the session run.

Runs of a session are found by name: ``gc-<session>-distil-<variant>-r<round>``,
``gc-<session>-sweep`` (the sweep's children) and ``gc-<session>-fake`` (dry run only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

GOAL_RATIO = {"1Hz": 1.01, "10Hz": 1.03}
GOAL_NVML_MS = 1.0
UTIL_TOLERANCE_PTS = 10.0
"""|utilisation - 100 x intensity| this script calls "on target" (its own choice, in points)."""


VARIANTS = ("off", "1Hz", "10Hz")


# ------------------------------------------------------------------------------------ helpers


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def _fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str:
    if value is None:
        return "absent"
    return f"{value:{spec}}{unit}"


def _history(client: Any, run_id: str, key: str, min_step: int = -1) -> list[float]:
    hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [float(m.value) for m in hist if m.step > min_step]


def _throttle_names() -> dict[int, str]:
    """Single-bit NVML clock event (throttle) reasons, from pynvml's constants."""
    try:
        import pynvml
    except ImportError:
        return {}
    names: dict[int, str] = {}
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        for attr in sorted(dir(pynvml)):
            if not attr.startswith(prefix):
                continue
            value = getattr(pynvml, attr)
            suffix = attr[len(prefix) :]
            if not isinstance(value, int) or value <= 0 or value & (value - 1):
                continue
            if suffix in ("All", "None", "Unknown"):
                continue
            names.setdefault(value, suffix)
    return names


def decode_throttle(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event-reasons mask (unknown bits as hex)."""
    names = _throttle_names()
    out = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            out.append(names.get(bit, hex(bit)))
        bit <<= 1
    return out


# -------------------------------------------------------------------------------------- start


def environment() -> dict[str, Any]:
    """Python, torch, CUDA, GPU and driver versions of this machine (what can be read)."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = bool(torch.cuda.is_available())
        if env["cuda_available"]:
            env["cuda_device_count"] = torch.cuda.device_count()
            props = torch.cuda.get_device_properties(0)
            env["gpu_name"] = props.name
            env["gpu_capability"] = f"{props.major}.{props.minor}"
            env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            env["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
            env["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    except Exception as e:  # noqa: BLE001 (report whatever is there)
        env["torch_error"] = repr(e)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            env["nvidia_driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
            cuda_drv = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            env["cuda_driver_api"] = f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}"
            env["nvml_device_count"] = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001
        env["nvml_error"] = str(e) or type(e).__name__
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        env["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    import rle

    env["rle_path"] = str(Path(rle.__file__).resolve().parent)
    return env


def cmd_start(args: argparse.Namespace) -> int:
    from rle.paths import resolve_tracking
    from rle.tracking.logger import create_run

    env = environment()
    out = Path(args.out)
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    tags = {
        "gpu_check.session": args.session,
        "gpu_check.role": "session",
        "gpu_check.mode": args.mode,
        **{f"env.{k}": str(v) for k, v in env.items()},
    }
    _, run_id = create_run(
        resolve_tracking(args.uri), args.experiment, f"gc-{args.session}-session", tags
    )
    _client(args.uri).log_artifact(run_id, str(out / "env.json"))
    (out / "session_run_id").write_text(run_id + "\n")
    for k, v in env.items():
        print(f"  {k}: {v}")  # noqa: T201
    print(f"session run {run_id}")  # noqa: T201
    return 0


# -------------------------------------------------------------------------------------- tests


def junit_counts(path: Path) -> dict[str, Any]:
    """Counts and skip reasons from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
    skipped = []
    failed = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for child in case:
            if child.tag == "skipped":
                skipped.append(f"{name}: {child.get('message', '')}")
            elif child.tag in ("failure", "error"):
                failed.append(f"{name}: {(child.get('message') or '')[:200]}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "skipped_list": skipped, "failed_list": failed}


def cmd_tests(args: argparse.Namespace) -> int:
    path = Path(args.junit)
    if not path.is_file():
        print(f"no JUnit file {path} (pytest did not run to the end)")  # noqa: T201
        return 1
    c = junit_counts(path)
    client = _client(args.uri)
    client.log_batch(
        args.session_run,
        metrics=[
            _metric(f"tests/gpu_{k}", float(c[k]))
            for k in ("tests", "passed", "failures", "errors", "skipped")
        ],
    )
    client.log_artifact(args.session_run, str(path), artifact_path="tests")
    print(  # noqa: T201
        f"gpu tests: {c['passed']} passed, {c['skipped']} skipped, "
        f"{c['failures']} failed, {c['errors']} errors"
    )
    for line in c["skipped_list"] + c["failed_list"]:
        print(f"  {line}")  # noqa: T201
    return 0


def _metric(key: str, value: float, step: int = 0) -> Any:
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


# ---------------------------------------------------------------------------------- nvml-cost


def nvml_cost(n: int) -> dict[str, Any]:
    """Time ``NvmlGpuSource.sample()`` (all supported fields of cuda:0) ``n`` times."""
    from rle.errors import TelemetryUnavailable
    from rle.telemetry import gpu
    from rle.telemetry.gpu import NVML_QUANTITIES

    res: dict[str, Any] = {"available": False, "n": n}
    try:
        import torch

        uuids = gpu.cuda_device_uuids([0]) if torch.cuda.is_available() else {}
        source = gpu.NvmlGpuSource(devices=uuids)
    except TelemetryUnavailable as e:
        res["reason"] = str(e)
        return res
    try:
        res["available"] = True
        res["tags"] = source.tags()
        for _ in range(20):  # warm-up
            source.sample()
        walls_ns: list[int] = []
        cpu0 = time.thread_time()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            reading = source.sample()
            walls_ns.append(time.perf_counter_ns() - t0)
        res["cpu_ms_per_sample"] = (time.thread_time() - cpu0) / n * 1e3
        walls = sorted(w / 1e6 for w in walls_ns)
        res["wall_ms_median"] = statistics.median(walls)
        res["wall_ms_mean"] = statistics.fmean(walls)
        res["wall_ms_p95"] = walls[min(len(walls) - 1, round(0.95 * (len(walls) - 1)))]
        res["wall_ms_max"] = walls[-1]
        res["keys"] = sorted(reading)
        res["values"] = reading
        res["unsupported"] = source.unsupported_fields(0)
        present = {k.removeprefix("gpu_0_") for k in reading}
        res["present"] = [q for q in NVML_QUANTITIES if q in present]
        res["absent"] = [q for q in NVML_QUANTITIES if q not in present]
        mask = int(reading.get("gpu_0_throttle_reasons", 0))
        res["throttle_now"] = decode_throttle(mask)
        # per field (diagnostic; uses the source's private device list, so guarded)
        per_field: dict[str, float] = {}
        try:
            device = source._devices[0]  # noqa: SLF001
            for name, reader in list(device.fields):
                ts = []
                for _ in range(max(50, n // 5)):
                    t0 = time.perf_counter_ns()
                    reader(device.handle)
                    ts.append(time.perf_counter_ns() - t0)
                per_field[name] = statistics.median(ts) / 1e3
        except Exception as e:  # noqa: BLE001
            res["per_field_error"] = repr(e)
        res["per_field_us_median"] = per_field
    finally:
        source.close()
    return res


def default_sources_cpu_ms() -> float | None:
    """CPU time of one sample of all default sources (telemetry_overhead.py's measure)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from telemetry_overhead import sample_cost_ms

        return float(sample_cost_ms())
    except Exception as e:  # noqa: BLE001
        print(f"default sources sample cost not measured: {e!r}", file=sys.stderr)  # noqa: T201
        return None


def cmd_nvml_cost(args: argparse.Namespace) -> int:
    res = nvml_cost(args.n)
    res["default_sources_cpu_ms_per_sample"] = default_sources_cpu_ms()
    out = Path(args.out) / "nvml_cost.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    client = _client(args.uri)
    run = args.session_run
    client.log_artifact(run, str(out))
    client.set_tag(run, "nvml.available", str(res["available"]).lower())
    if not res["available"]:
        client.set_tag(run, "nvml.reason", res["reason"][:5000])
        print(f"no NVML: {res['reason']}")  # noqa: T201
    else:
        metrics = [
            _metric("nvml/sample_wall_ms_median", res["wall_ms_median"]),
            _metric("nvml/sample_wall_ms_mean", res["wall_ms_mean"]),
            _metric("nvml/sample_wall_ms_p95", res["wall_ms_p95"]),
            _metric("nvml/sample_cpu_ms", res["cpu_ms_per_sample"]),
            *(
                _metric(f"nvml/field_{k}_us_median", v)
                for k, v in res["per_field_us_median"].items()
            ),
        ]
        client.log_batch(run, metrics=metrics)
        client.set_tag(run, "nvml.fields_present", ",".join(res["present"]))
        client.set_tag(run, "nvml.fields_absent", ",".join(res["absent"]) or "none")
        client.set_tag(run, "nvml.unsupported", ",".join(res["unsupported"]) or "none")
        print(  # noqa: T201
            f"one NVML sample of all fields (cuda:0, n={args.n}): median {res['wall_ms_median']:.3f} ms "
            f"wall (p95 {res['wall_ms_p95']:.3f}, mean {res['wall_ms_mean']:.3f}), "
            f"{res['cpu_ms_per_sample']:.3f} ms CPU"
        )
        print(f"fields present: {', '.join(res['present'])}")  # noqa: T201
        print(f"fields absent: {', '.join(res['absent']) or 'none'}")  # noqa: T201
        slow = sorted(res["per_field_us_median"].items(), key=lambda kv: -kv[1])
        print("per field (median us): " + ", ".join(f"{k} {v:.0f}" for k, v in slow))  # noqa: T201
    if res["default_sources_cpu_ms_per_sample"] is not None:
        client.log_batch(
            run,
            metrics=[
                _metric(
                    "telemetry/default_sources_cpu_ms", res["default_sources_cpu_ms_per_sample"]
                )
            ],
        )
        print(  # noqa: T201
            "CPU time of one sample of all default sources (telemetry_overhead.py): "
            f"{res['default_sources_cpu_ms_per_sample']:.3f} ms"
        )
    return 0


# ------------------------------------------------------------------------------------- report


def _session_runs(client: Any, experiment: str, session: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(
        client.search_runs(
            [exp.experiment_id],
            filter_string=f"attributes.run_name LIKE 'gc-{session}-%'",
            max_results=5000,
        )
    )


def _run_step_times(client: Any, run: Any) -> dict[str, Any]:
    """Median step time after warm-up, from train/samples_per_second (one step per window)."""
    p = run.data.params
    max_steps = int(p.get("trainer.max_steps", 0) or 0)
    warm = max(5, max_steps // 10)
    sps = _history(client, run.info.run_id, "train/samples_per_second", warm)
    per_step = int(p.get("data.batch_size", 0) or 0) * int(p.get("trainer.devices", 1) or 1)
    per_step *= int(p.get("trainer.num_nodes", 1) or 1)
    every = int(p.get("trainer.log_every_n_steps", 1) or 1)
    out: dict[str, Any] = {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "steps_measured": len(sps),
        "samples_per_second_median": _median(sps),
        "warmup_steps_dropped": warm,
    }
    if per_step and every == 1 and sps:
        out["step_ms_median"] = _median([1000.0 * per_step / v for v in sps if v > 0])
    overhead = _history(client, run.info.run_id, "system/telemetry_overhead_milliseconds", warm)
    out["callback_ms_median"] = _median(overhead)
    out["energy_j_per_step_median"] = _median(
        _history(client, run.info.run_id, "train/energy_joules_per_step", warm)
    )
    out["samples_per_joule_median"] = _median(
        _history(client, run.info.run_id, "train/samples_per_joule", warm)
    )
    out["missing_windows"] = run.data.tags.get("telemetry.missing_windows")
    return out


def _throttle_seen(client: Any, runs: list[Any]) -> dict[str, Any]:
    seen: dict[str, dict[str, int]] = {}
    windows = 0
    with_key = 0
    for run in runs:
        keys = [k for k in run.data.metrics if k.endswith("_throttle_reasons")]
        if keys:
            with_key += 1
        for key in keys:
            for value in _history(client, run.info.run_id, key):
                windows += 1
                for name in decode_throttle(int(value)):
                    seen.setdefault(name, {}).setdefault(run.info.run_name, 0)
                    seen[name][run.info.run_name] += 1
    return {"runs_with_throttle_metric": with_key, "windows": windows, "reasons": seen}


def _fields_landed(run: Any, device: str) -> dict[str, list[str]]:
    from rle.telemetry.gpu import NVML_QUANTITIES

    prefix = f"system/{device}_"
    landed = {k.removeprefix(prefix) for k in run.data.metrics if k.startswith(prefix)}
    return {
        "present": [q for q in NVML_QUANTITIES if q in landed],
        "absent": [q for q in NVML_QUANTITIES if q not in landed],
        "other": sorted(landed - set(NVML_QUANTITIES)),
    }


def _sweep_rows(client: Any, runs: list[Any], device: str) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        rid = run.info.run_id
        p = run.data.params
        try:
            target = float(p["workload.intensity"])
        except (KeyError, ValueError):
            continue
        max_steps = int(p.get("trainer.max_steps", 0) or 0)
        warm = max(3, max_steps // 10)
        util = _median(_history(client, rid, f"system/{device}_utilization_percentage", warm))
        power_key = (
            "system/cpu_package_power_watts"
            if device == "cpu"
            else f"system/{device}_power_usage_watts"
        )
        rows.append(
            {
                "run_id": rid,
                "status": run.info.status,
                "target": target,
                "duty_achieved_median": _median(
                    _history(client, rid, "synthetic/duty_cycle_achieved", warm)
                ),
                "util_pct_median": util,
                "util_pct_mean_summary": run.data.metrics.get(
                    f"summary/{device}_utilization_mean_percentage"
                ),
                "util_error_pts": None if util is None else util - 100.0 * target,
                "power_w_median": _median(_history(client, rid, power_key, warm)),
                "power_pct_of_limit_median": _median(
                    _history(client, rid, f"system/{device}_power_usage_percentage", warm)
                ),
                "temperature_max_c": run.data.metrics.get(
                    f"summary/{device}_temperature_max_celsius"
                ),
                "energy_j_per_step_median": _median(
                    _history(client, rid, "train/energy_joules_per_step", warm)
                ),
                "samples_per_joule_median": _median(
                    _history(client, rid, "train/samples_per_joule", warm)
                ),
                "power_source": run.data.tags.get(f"power_source.{device}", "none"),
                "steps": max_steps,
            }
        )
    return sorted(rows, key=lambda r: r["target"])


def _goal(ok: bool | None, dry: bool) -> str:
    if ok is None:
        return "not measured"
    if dry:
        return "(dry run on CPU: not the GPU figure)"
    return "met" if ok else "MISSED"


def build_report(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    client = _client(args.uri)
    dry = args.mode == "dry"
    runs = _session_runs(client, args.experiment, args.session)
    by_name: dict[str, list[Any]] = {}
    for r in runs:
        by_name.setdefault(r.info.run_name, []).append(r)
    pre = f"gc-{args.session}-"
    s: dict[str, Any] = {"session": args.session, "mode": args.mode, "tracking_uri": args.uri}
    lines: list[str] = []
    say = lines.append
    say(f"GPU check (issue 17) session {args.session}, mode {args.mode}")
    say(
        f"MLflow store: {args.uri}, experiment {args.experiment!r}; {len(runs)} runs of this session"
    )

    # environment
    env_path = Path(args.out) / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    s["environment"] = env
    say(
        "machine: "
        + ", ".join(
            f"{k}={env.get(k)}"
            for k in (
                "gpu_name",
                "nvidia_driver",
                "cuda_driver_api",
                "torch",
                "torch_cuda",
                "cuda_available",
                "host",
            )
        )
    )
    if dry:
        say("DRY RUN: CPU stand-ins for every GPU step; no figure below is a GPU figure.")

    # steps
    steps = []
    if args.steps_file and Path(args.steps_file).is_file():
        for line in Path(args.steps_file).read_text().splitlines():
            name, rc, secs, log = (line.split("\t") + ["", "", "", ""])[:4]
            steps.append({"step": name, "rc": int(rc), "seconds": int(secs), "log": log})
    s["steps"] = steps
    say("")
    say("steps:")
    for st in steps:
        what = "ok" if st["rc"] == 0 else ("TIMED OUT" if st["rc"] in (124, 137) else "FAILED")
        say(f"  {st['step']:<22} {what:<9} rc={st['rc']:<3} {st['seconds']:>4} s  {st['log']}")

    # session run: tests + NVML cost
    session_runs = by_name.get(f"{pre}session", [])
    srun = session_runs[0] if session_runs else None
    say("")
    junit = Path(args.out) / "pytest_gpu.xml"
    if junit.is_file():
        c = junit_counts(junit)
        s["gpu_tests"] = c
        say(
            f"gpu-marked tests (pytest -m gpu): {c['passed']} passed, {c['skipped']} skipped, "
            f"{c['failures']} failed, {c['errors']} errors"
        )
        for line in c["skipped_list"] + c["failed_list"]:
            say(f"  {line}")
        if not dry and c["skipped"]:
            say("  WARNING: gpu tests skipped on the GPU run: CUDA not visible to pytest?")
    else:
        s["gpu_tests"] = None
        say("gpu-marked tests: no result (pytest did not finish)")

    nvml_path = Path(args.out) / "nvml_cost.json"
    nvml = json.loads(nvml_path.read_text()) if nvml_path.is_file() else None
    s["nvml_cost"] = nvml
    say("")
    if nvml is None:
        say("NVML sample cost: not measured (step failed)")
    elif not nvml["available"]:
        say(f"NVML sample cost: no NVML ({nvml.get('reason')})")
    else:
        ms = nvml["wall_ms_median"]
        say(
            f"NVML sample cost, all fields of cuda:0 (NvmlGpuSource.sample, n={nvml['n']}): median "
            f"{ms:.3f} ms wall (p95 {nvml['wall_ms_p95']:.3f}, mean {nvml['wall_ms_mean']:.3f}), "
            f"{nvml['cpu_ms_per_sample']:.3f} ms CPU; goal < {GOAL_NVML_MS:g} ms: "
            f"{_goal(ms < GOAL_NVML_MS, False)}"
        )
        s["nvml_goal_met"] = ms < GOAL_NVML_MS
        slow = sorted(nvml.get("per_field_us_median", {}).items(), key=lambda kv: -kv[1])
        if slow:
            say("  per field (median us): " + ", ".join(f"{k} {v:.0f}" for k, v in slow))
        say(f"NVML fields present (probe): {', '.join(nvml['present'])}")
        say(f"NVML fields absent (probe): {', '.join(nvml['absent']) or 'none'}")
        say(f"  unsupported per the source: {', '.join(nvml['unsupported']) or 'none'}")
        say(
            f"  throttle reasons at probe time (idle GPU): {', '.join(nvml['throttle_now']) or 'none'}"
        )
    if nvml and nvml.get("default_sources_cpu_ms_per_sample") is not None:
        say(
            "CPU time of one sample of all default sources: "
            f"{nvml['default_sources_cpu_ms_per_sample']:.3f} ms"
        )

    # DistilGPT-2: step-time ratios
    say("")
    workload = "distilgpt2_tiny on CPU" if dry else "distilgpt2, bf16-mixed"
    say(
        f"DistilGPT-2 ({workload}), telemetry off / 1 Hz / 10 Hz, step time from train/samples_per_second:"
    )
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    for name, rs in sorted(by_name.items()):
        if not name.startswith(f"{pre}distil-"):
            continue
        variant, _, rnd_text = name.removeprefix(f"{pre}distil-").rpartition("-r")
        for r in rs:
            rounds.setdefault(int(rnd_text), {})[variant] = _run_step_times(client, r)
    s["distil_rounds"] = {str(k): v for k, v in sorted(rounds.items())}
    ratios: dict[str, list[float]] = {"1Hz": [], "10Hz": []}
    for rnd, variants in sorted(rounds.items()):
        parts = []
        for v in VARIANTS:
            m = variants.get(v)
            if m is None:
                parts.append(f"{v} missing")
                continue
            parts.append(
                f"{v} {_fmt(m.get('step_ms_median'), '.2f', ' ms')} ({m['status']}, {m['steps_measured']} steps"
                + (
                    f", callback {m['callback_ms_median']:.2f} ms"
                    if m.get("callback_ms_median")
                    else ""
                )
                + ")"
            )
        say(f"  round {rnd}: " + "; ".join(parts))
        off = variants.get("off", {}).get("step_ms_median")
        for v in ratios:
            on = variants.get(v, {}).get("step_ms_median")
            if off and on:
                ratios[v].append(on / off)
    s["ratios"] = {}
    for v, vals in ratios.items():
        med = _median(vals)
        s["ratios"][v] = {"per_round": vals, "median": med, "goal": GOAL_RATIO[v]}
        ok = None if med is None else med <= GOAL_RATIO[v]
        if not dry and med is not None:
            s["ratios"][v]["goal_met"] = ok
        say(
            f"  step-time ratio on/off at {v}: {_fmt(med, '.4f')} "
            f"(rounds: {', '.join(f'{x:.4f}' for x in vals) or '-'}); goal <= {GOAL_RATIO[v]}: {_goal(ok, dry)}"
        )
    on_runs = [m for variants in rounds.values() for k, m in variants.items() if k != "off"]
    jps = _median([m["energy_j_per_step_median"] for m in on_runs if m["energy_j_per_step_median"]])
    spj = _median([m["samples_per_joule_median"] for m in on_runs if m["samples_per_joule_median"]])
    s["distil_energy"] = {"joules_per_step_median": jps, "samples_per_joule_median": spj}
    say(
        f"  energy (telemetry-on runs): {_fmt(jps, '.3f', ' J/step')}, {_fmt(spj, '.3f', ' samples/J')}"
        + ("" if jps is not None else " (no energy counter on this machine)")
    )

    # synthetic sweep
    device = "cpu" if dry else "gpu_0"
    children = [
        r for r in by_name.get(f"{pre}sweep", []) if r.data.tags.get("rle.role") == "sweep_child"
    ]
    rows = _sweep_rows(client, children, device)
    s["sweep"] = {"device": device, "rows": rows}
    parents = {r.data.tags.get("mlflow.parentRunId") for r in children} - {None}
    s["sweep"]["parent_run_ids"] = sorted(parents)
    say("")
    load = "synthetic_cpu, CPU utilisation" if dry else "synthetic_gpu, GPU utilisation (NVML)"
    say(
        f"synthetic sweep ({load}; median over steps after warm-up; on target = within "
        f"{UTIL_TOLERANCE_PTS:g} points of 100 x intensity):"
    )
    say(
        "  | intensity | duty achieved | util % | util - target | power W | power % limit | "
        "max temp C | J/step | samples/J | status |"
    )
    on_target = []
    for r in rows:
        err = r["util_error_pts"]
        ok = None if err is None else abs(err) <= UTIL_TOLERANCE_PTS
        on_target.append(ok)
        say(
            f"  | {r['target']:.2f} | {_fmt(r['duty_achieved_median'])} | {_fmt(r['util_pct_median'], '.1f')} "
            f"| {_fmt(err, '+.1f')} ({_goal(ok, dry) if not dry else 'dry'}) | {_fmt(r['power_w_median'], '.1f')} "
            f"| {_fmt(r['power_pct_of_limit_median'], '.1f')} | {_fmt(r['temperature_max_c'], '.0f')} "
            f"| {_fmt(r['energy_j_per_step_median'])} | {_fmt(r['samples_per_joule_median'])} | {r['status']} |"
        )
    if len(rows) < 4:
        say(f"  WARNING: {len(rows)} of 4 sweep jobs found in the store")
    not_finished = [f"{r['target']:g} {r['status']}" for r in rows if r["status"] != "FINISHED"]
    s["sweep"]["not_finished"] = not_finished
    if not_finished:
        say(f"  WARNING: sweep jobs not FINISHED: {', '.join(not_finished)}")
    powers = [r["power_w_median"] for r in rows]
    if rows and all(p is not None for p in powers):
        mono = all(b > a for a, b in zip(powers, powers[1:], strict=False))
        s["sweep"]["power_rises_monotonically"] = mono
        say(f"  power rises monotonically with intensity: {mono}")
    else:
        src = ", ".join(sorted({r["power_source"] for r in rows})) or "none"
        say(f"  power: absent on this machine (power_source.{device}={src})")
    if not dry and on_target:
        s["sweep"]["util_on_target"] = all(bool(x) for x in on_target)

    # NVML fields that landed in MLflow, throttle reasons
    say("")
    field_run = next(
        (
            by_name[f"{pre}distil-{v}-r{rnd}"][0]
            for v in ("10Hz", "1Hz")
            for rnd in sorted(rounds)
            if v in rounds[rnd]
        ),
        None,
    )
    fake = by_name.get(f"{pre}fake", [])
    if dry and fake:
        field_run = fake[0]
        say("GPU report paths on FakeGpuSource (telemetry=fake; plumbing only, NOT hardware):")
        fm = _run_step_times(client, field_run)
        say(
            f"  fake-GPU energy: {_fmt(fm['energy_j_per_step_median'], '.3f', ' J/step')}, "
            f"{_fmt(fm['samples_per_joule_median'], '.3f', ' samples/J')}"
        )
        s["fake_gpu"] = fm
    if field_run is not None:
        landed = _fields_landed(field_run, "gpu_0")
        s["fields_landed"] = {"run": field_run.info.run_name, **landed}
        say(f"gpu_0 fields logged to MLflow in {field_run.info.run_name}:")
        say(f"  present: {', '.join(landed['present']) or 'none'}")
        say(f"  absent: {', '.join(landed['absent']) or 'none'}")
        if landed["other"]:
            say(f"  also: {', '.join(landed['other'])}")
        unavailable = field_run.data.tags.get("telemetry.unavailable.gpu")
        if unavailable:
            say(f"  telemetry.unavailable.gpu: {unavailable}")
    throttle = _throttle_seen(client, runs)
    s["throttle"] = throttle
    if throttle["runs_with_throttle_metric"] == 0:
        say("throttle reasons seen: none recorded (no run has a *_throttle_reasons metric)")
    else:
        say(
            f"throttle reasons seen ({throttle['windows']} windows in "
            f"{throttle['runs_with_throttle_metric']} runs; windows per run):"
        )
        if not throttle["reasons"]:
            say("  none (mask 0 in every window)")
        for name, per_run in sorted(throttle["reasons"].items()):
            short = ", ".join(f"{k.removeprefix(pre)} {n}" for k, n in sorted(per_run.items()))
            say(f"  {name}: {short}")

    # verdict
    failed = [str(st["step"]) for st in steps if st["rc"] != 0]
    s["failed_steps"] = failed
    say("")
    if dry:
        verdict = "DRY RUN " + ("PASSED" if not failed else "FAILED")
        say(
            f"{verdict}: {len(steps) - len(failed)}/{len(steps)} steps ok"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + ". GPU figures pending a GPU: bash benchmarks/gpu_check.sh"
        )
    else:
        goals = {
            "ratio_1Hz": s["ratios"]["1Hz"].get("goal_met"),
            "ratio_10Hz": s["ratios"]["10Hz"].get("goal_met"),
            "nvml_sample_lt_1ms": s.get("nvml_goal_met"),
            "sweep_util_on_target": s["sweep"].get("util_on_target"),
        }
        s["goals"] = goals
        say(
            "goals: "
            + ", ".join(
                f"{k} {'met' if v else ('MISSED' if v is False else 'not measured')}"
                for k, v in goals.items()
            )
        )
        verdict = "GPU CHECK " + ("COMPLETE" if not failed else "INCOMPLETE")
        say(
            f"{verdict}: {len(steps) - len(failed)}/{len(steps)} steps ok"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    s["verdict"] = verdict
    if srun is not None:
        s["session_run_id"] = srun.info.run_id
    return s, lines


def cmd_report(args: argparse.Namespace) -> int:
    summary, lines = build_report(args)
    out = Path(args.out)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print("\n".join(lines))  # noqa: T201
    run = summary.get("session_run_id")
    if run:
        client = _client(args.uri)
        metrics = []
        for v, r in summary["ratios"].items():
            if r["median"] is not None:
                metrics.append(_metric(f"check/step_time_ratio_{v}", r["median"]))
        for row in summary["sweep"]["rows"]:
            step = round(100 * row["target"])
            for k in ("util_pct_median", "power_w_median", "energy_j_per_step_median"):
                if row[k] is not None:
                    metrics.append(_metric(f"check/sweep_{k}", row[k], step))
        if metrics:
            client.log_batch(run, metrics=metrics)
        client.log_artifact(run, str(out / "summary.txt"))
        client.log_artifact(run, str(out / "summary.json"))
        client.set_terminated(run, "FINISHED" if not summary["failed_steps"] else "FAILED")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", required=True, help="MLflow tracking URI")
    common.add_argument("--out", required=True, help="output folder ($OUT)")
    p = sub.add_parser("start", parents=[common])
    p.add_argument("--experiment", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--mode", choices=("gpu", "dry"), required=True)
    p = sub.add_parser("tests", parents=[common])
    p.add_argument("--session-run", required=True)
    p.add_argument("--junit", required=True)
    p = sub.add_parser("nvml-cost", parents=[common])
    p.add_argument("--session-run", required=True)
    p.add_argument("--n", type=int, default=1000)
    p = sub.add_parser("report", parents=[common])
    p.add_argument("--experiment", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--mode", choices=("gpu", "dry"), required=True)
    p.add_argument("--steps-file")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    return {
        "start": cmd_start,
        "tests": cmd_tests,
        "nvml-cost": cmd_nvml_cost,
        "report": cmd_report,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
