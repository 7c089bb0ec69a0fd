"""``TelemetryCallback``: training dynamics, hardware telemetry and RLE on one step axis.

Every rank samples its own devices and process in a background :class:`rle.telemetry.Sampler`;
host-wide sources are sampled once per node (local rank 0). At each logging step (cadence and step
from :mod:`rle.callbacks.steps`: the same step and cadence as Lightning's own ``self.log``) every
rank drains its window, feeds each device's samples through the incremental RLE engine
(:class:`rle.metric.RLEStream`), and the windows are gathered to rank 0, which logs everything in
one batched call. Tags and artifacts go to the job's MLflow run through a
:class:`~rle.callbacks.sink.RunSink`: rle's logger, Lightning's ``MLFlowLogger`` or an active fluent
run. A key the module logs itself (``self.log("train/loss", ...)``) is never written by rle; when
MLflow's own system-metrics monitor writes into the run, rle leaves its keys to it (said once,
tag ``telemetry.mlflow_system_metrics``).

On more than one node, host-scoped keys carry the node (MLflow's convention
``system/<node_id>/<name>``, here ``node_<node_rank>``), as do GPU devices (``node_1/gpu_0``), so no
two nodes write one key.

Logged metrics:

=============================================== ============== ==================================
key                                             unit           source
=============================================== ============== ==================================
``train/loss``                                  nats/token     the step's loss, mean over ranks
``train/grad_norm``                             grad units     total L2 norm of all gradients
                                                               after unscaling, before clipping
``train/lr-<Optimizer>[/pg<i>]``                 1              LR per optimizer and param group,
                                                               named as LearningRateMonitor
                                                               names them
``train/samples_per_second``                    samples/s      all ranks, over the window
``train/tokens_per_second``                     tokens/s       all ranks, over the window
``train/energy_joules_per_step``                J/step         energy since the last energy point
                                                               / optimizer steps since then
``train/samples_per_joule``                     samples/J      where an energy counter exists
``system/<quantity>``                           in the name    window mean (max: ``_max_``;
                                                               ``*_joules``: window delta;
                                                               throttle reasons: bitwise OR)
``system/rank_<r>/process_*``                   in the name    per DDP rank
``system/telemetry_overhead_milliseconds``      ms             callback time on the training
                                                               thread for the window
``rle/<device>/<term>``                         1 (τ: s)       last sample; collapse: any
=============================================== ============== ==================================

At the end: ``rle/<device>/collapse_events``, ``collapse_seconds``, ``collapse_fraction``,
``rle_smoothed_mean`` and ``summary/<quantity>`` (mean/p95 power, peak temperature, energy);
artifacts ``telemetry/samples.parquet`` (one row per sample and device) and
``telemetry/events.jsonl`` (collapse events with their hardware context).

A missing sensor is absent, never zero: sources that cannot be built are reported once and tagged
(``telemetry.unavailable``), and RLE terms that need an absent input are not logged (the reason is
tagged ``rle.<device>.absent``).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from typing_extensions import override

from rle.callbacks.gather import RankWindow, gather_to_rank_zero, merge_windows, rle_last
from rle.callbacks.sink import MLFLOW_MONITOR_KEY_PATTERN, mlflow_monitor_active, resolve_sink
from rle.callbacks.steps import current_step, should_log, step_counter
from rle.tracking import keys

__all__ = ["TelemetryCallback", "rle_metric_key"]

log = logging.getLogger(__name__)

_RLE_TERM_KEYS = {
    "rle_raw": "rle_raw",
    "rle_smoothed": "rle_smoothed",
    "rle_norm": "rle_norm",
    "E_th": "e_th",
    "E_pw": "e_pw",
    "stability": "stability",
    "a_load": "a_load",
    "t_sustain_s": "t_sustain_seconds",
    "rolling_peak": "rolling_peak",
    "collapse": "collapse",
}
"""rle.metric output column -> MLflow term name (docs/rle-metric.md §5)."""

_RLE_INPUT_COLUMNS = ("util_pct", "temp_c", "power_w", "rated_w", "limit_c")


def rle_metric_key(device: str, column: str) -> str | None:
    """Return the MLflow key of an ``rle.metric`` output column for one device, or ``None``."""
    term = _RLE_TERM_KEYS.get(column)
    return keys.rle_key(device, term) if term else None


def _prune_none(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _prune_none(v) for k, v in node.items() if v is not None}
    return node


class TelemetryCallback(L.Callback):
    """Log ``train/*``, ``system/*`` and ``rle/*`` metrics on ``trainer.global_step``.

    Use it in any Lightning script: ``Trainer(logger=MLFlowLogger(...),
    callbacks=[TelemetryCallback()])``, or inside ``with mlflow.start_run():``.

    Args:
        sources: ``telemetry.sources``: named source entries with ``_target_`` (see
            :func:`rle.telemetry.build_sources`); ``None`` (the default) samples the real
            hardware (:data:`rle.telemetry.DEFAULT_SOURCES`: psutil host and process, NVML, RAPL,
            hwmon); an empty mapping logs ``train/*`` only.
        sample_hz: Sampling rate of the background sampler, Hz (default 1; tested to 10).
        rle: ``telemetry.rle`` node: ``profile`` plus overrides (docs/rle-metric.md §10); ``None``
            values mean "the profile's value".
        cpu_rated_w: Rated CPU package power, W, for α when RAPL gives no long-term limit.
        tokens_per_sample: Tokens per training sample, for ``train/tokens_per_second``.
        write_artifacts: Write ``telemetry/samples.parquet`` and ``telemetry/events.jsonl``.

    Raises:
        ValueError: If ``sample_hz`` is not positive or ``tokens_per_sample`` < 1.
        rle.errors.MetricInputError: If the ``rle`` node names an unknown profile or key.
        lightning.fabric.utilities.exceptions.MisconfigurationException: At ``setup`` on global
            rank 0 if there is no MLflow run to write into (see :func:`rle.callbacks.sink.resolve_sink`).
    """

    def __init__(
        self,
        sources: Mapping[str, Any] | None = None,
        sample_hz: float = 1.0,
        rle: Mapping[str, Any] | None = None,
        cpu_rated_w: float | None = None,
        tokens_per_sample: int | None = None,
        write_artifacts: bool = True,
    ) -> None:
        super().__init__()
        if not sample_hz > 0:
            raise ValueError(f"telemetry.sample_hz must be positive, got {sample_hz}.")
        if tokens_per_sample is not None and tokens_per_sample < 1:
            raise ValueError(f"tokens_per_sample must be positive, got {tokens_per_sample}.")
        from rle.metric import profile_from_config
        from rle.telemetry import DEFAULT_SOURCES

        self.sources_cfg = dict(DEFAULT_SOURCES if sources is None else sources)
        self.sample_hz = float(sample_hz)
        self.rle_cfg = _prune_none(dict(rle or {}))
        self.profile = profile_from_config(self.rle_cfg)  # validates early, in the launcher
        self._explicit_inputs = _explicit_inputs(self.rle_cfg)
        self.cpu_rated_w = cpu_rated_w
        self.tokens_per_sample = tokens_per_sample
        self.write_artifacts = write_artifacts
        self._reset()

    def _reset(self) -> None:
        self._grad_norm: float | None = None
        self._stepped = False
        self._window_samples = 0
        self._window_start_s = 0.0
        self._sampler: Any = None
        self._built: Any = None
        self._aggregator: Any = None
        self._streams: dict[str, Any] = {}
        self._prev_values: dict[str, float] | None = None
        self._prev_t: float | None = None
        self._overhead_s = 0.0
        self._tags_sent = False
        self._rows: list[dict[str, Any]] = []  # rank 0: every raw row of the job
        self._tags_logged: dict[str, str] = {}
        self._missing_windows = 0
        self._sink: Any = None
        self._skip_keys: Any = None  # MLflow monitor's keys, when it writes into the run
        self._node_prefix = ""
        self._energy_mark_step = -1  # step of the last energy point (-1: none yet)
        self._energy_samples = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_sampler=None, _built=None, _aggregator=None, _streams={}, _sink=None)
        return state

    # ------------------------------------------------------------------------------ lifecycle

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.is_global_zero:
            self._sink = resolve_sink(trainer)
            if mlflow_monitor_active(self._sink.run_id):
                import re

                self._skip_keys = re.compile(MLFLOW_MONITOR_KEY_PATTERN)
                log.warning(
                    "MLflow's own system-metrics monitor writes into run %s: rle leaves its keys "
                    "(system/cpu_utilization_percentage, system/gpu_<i>_utilization_percentage, ...) "
                    "to it and logs the rest on the step axis.",
                    self._sink.run_id,
                )
                self._sink.set_tags(
                    {"telemetry.mlflow_system_metrics": "on: its keys are left to MLflow's monitor"}
                )
        if trainer.num_nodes > 1:
            self._node_prefix = f"node_{trainer.node_rank}/"
        if not self.sources_cfg:
            return
        from rle.telemetry import Sampler, WindowAggregator, build_sources

        cfg = dict(self.sources_cfg)
        overrides: dict[str, dict[str, Any]] = {}
        extra_unavailable: dict[str, str] = {}
        gpu_entry = cfg.get("gpu")
        if gpu_entry is not None and str(dict(gpu_entry).get("_target_", "")).endswith(
            "NvmlGpuSource"
        ):
            device = pl_module.device
            if device.type == "cuda":
                from rle.telemetry.gpu import cuda_device_uuids

                overrides["gpu"] = {"devices": cuda_device_uuids([device.index or 0])}
            elif torch.cuda.is_available():
                cfg.pop("gpu")  # GPUs exist but this job does not use them
                extra_unavailable["gpu"] = "the job runs on the CPU"
        self._built = build_sources(cfg, include_host=trainer.local_rank == 0, overrides=overrides)
        for name, reason in extra_unavailable.items():
            self._built.unavailable[name] = reason
        self._aggregator = WindowAggregator()
        self._sampler = Sampler(
            list(self._built.sources.values()), sample_hz=self.sample_hz, join_timeout_s=2.0
        )
        self._sampler.start()

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window_start_s = time.perf_counter()
        self._window_samples = 0
        self._energy_mark_step = step_counter(trainer) - 1

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        from lightning.pytorch.utilities import grad_norm

        # Lightning's own utility, so the value equals a module's self.log(grad_norm(self, 2))
        norms = grad_norm(pl_module, norm_type=2.0)
        total = norms.get("grad_2.0_norm_total")
        self._grad_norm = None if total is None else float(total)
        self._stepped = True

    @override
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._window_samples += _batch_size(batch)
        if not self._stepped:
            return  # gradient accumulation: no optimizer step in this batch
        self._stepped = False
        t0 = time.perf_counter()
        if self._sampler is not None:
            self._sampler.set_step(step_counter(trainer) + 1)
        self._overhead_s += time.perf_counter() - t0
        if should_log(trainer):
            self._log_step(trainer, pl_module, outputs)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # every rank reaches here: one closing sample (so even a run shorter than a sampling
        # period has one), then the last partial window is gathered for the artifact and summaries
        if self._sampler is not None:
            self._sampler.stop()
            if not self._sampler.is_running:  # a hung source keeps its thread: no closing sample
                self._sampler.set_step(current_step(trainer))
                self._sampler.sample_now()
        merged = self._collect(trainer, final=True)
        if trainer.is_global_zero:
            if merged is not None:
                self._rows.extend(merged.rows)
            self._finish(trainer)
        self._close()
        if self._sink is not None:
            self._sink.close()
        # the other ranks wait for rank 0's summaries and uploads, so no rank tears its process
        # group down while another is still inside the callback
        trainer.strategy.barrier("rle_telemetry_end")

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._sampler is not None and trainer.is_global_zero:
            window = self._rank_window(trainer)
            self._rows.extend(window.rows)
            self._finish(trainer)
        self._close()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close()

    def _close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._built is not None:
            self._built.close()
            self._built = None

    # ------------------------------------------------------------------------------ windows

    def _rank_window(self, trainer: L.Trainer) -> RankWindow:
        """Drain this rank's sampler and reduce the window (runs on every rank)."""
        from rle.metric import RLEStream
        from rle.telemetry import prefix_keys, rle_inputs

        rank = trainer.global_rank
        window = RankWindow(rank=rank)
        if self._sampler is None:
            return window
        samples = self._sampler.drain()
        summary = self._aggregator(samples)
        window.sample_count = summary.sample_count
        window.sampling_time_s = summary.sampling_time_s
        process_keys = {k for k in summary.values if k.startswith("process_")}
        node = self._node_prefix  # "" on one node, "node_<r>/" on several
        window.values = {node + k: v for k, v in summary.values.items() if k not in process_keys}
        window.values.update(
            prefix_keys({k: summary.values[k] for k in process_keys}, f"rank_{rank}/")
        )
        if not self._tags_sent:
            window.tags = dict(self._built.tags)
            for name, reason in self._built.unavailable.items():
                window.tags.setdefault(f"telemetry.unavailable.{name}", reason)
            self._tags_sent = True
        points: dict[str, list[dict[str, float]]] = {}
        for s in samples:
            interval = None if self._prev_t is None else s.monotonic_s - self._prev_t
            inputs = rle_inputs(
                s.values,
                cpu_rated_w=self.cpu_rated_w,
                previous_values=self._prev_values,
                interval_s=interval,
            )
            self._prev_values, self._prev_t = dict(s.values), s.monotonic_s
            base = {
                "wall_time_s": s.wall_time_s,
                "monotonic_s": s.monotonic_s,
                "global_step": s.global_step,
                "rank": rank,
                "node_rank": trainer.node_rank,
                "host": _HOST,
            }
            proc = {k: v for k, v in s.values.items() if k.startswith("process_")}
            if not inputs:
                window.rows.append({**base, "device": f"rank_{rank}", **proc})
            for local_device, inp in inputs.items():
                device = node + local_device
                # precedence: explicit config > sensor > profile default
                explicit = self._explicit_inputs.get(local_device.split("_")[0], {})
                inp = {**inp, **explicit}  # type: ignore[typeddict-item]
                stream = self._streams.get(device)
                if stream is None:
                    stream = self._streams[device] = RLEStream(local_device, self.profile)
                point = stream.update({"timestamp": s.monotonic_s, **inp})
                points.setdefault(device, []).append(point)
                own = {k: v for k, v in s.values.items() if _belongs(k, local_device)}
                window.rows.append({**base, "device": device, **own, **proc, **inp, **point})
        window.rle = {d: _loggable_terms(rle_last(p)) for d, p in points.items()}
        return window

    def _collect(self, trainer: L.Trainer, final: bool = False) -> Any:
        window = self._rank_window(trainer)
        gathered = gather_to_rank_zero(window, trainer.global_rank, trainer.world_size)
        if gathered is None:
            return None
        merged = merge_windows(gathered)
        if merged.missing_ranks and self._sampler is not None and not final:
            self._missing_windows += 1
        if merged.missing_ranks and self._missing_windows == 1 and not final:
            log.warning(
                "No telemetry sample from rank(s) %s in the window ending at step %d (sample_hz=%s "
                "is slower than the logging cadence, or a source stalled); said once, counted in "
                "the run tag telemetry.missing_windows.",
                merged.missing_ranks,
                current_step(trainer),
                self.sample_hz,
            )
        return merged

    def _log_step(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any) -> None:
        t0 = time.perf_counter()
        elapsed_s = max(t0 - self._window_start_s, 1e-9)
        loss = _loss_of(outputs)
        device = pl_module.device
        # Collectives on every rank at the same steps (the cadence depends on the step only).
        # Manual optimization may return no loss: then every rank sends NaN and none is logged.
        loss_t = (
            loss.detach().float().reshape(())
            if loss is not None
            else torch.tensor(math.nan, device=device)
        )
        loss_mean = trainer.strategy.reduce(loss_t, reduce_op="mean")
        samples = trainer.strategy.reduce(
            torch.tensor(float(self._window_samples), device=device), reduce_op="sum"
        )
        merged = self._collect(trainer) if self._sampler is not None else None
        step = current_step(trainer)
        if trainer.is_global_zero:
            metrics: dict[str, float] = {}
            if math.isfinite(float(loss_mean)):
                metrics[keys.TRAIN_LOSS] = float(loss_mean)
            if self._grad_norm is not None:
                metrics[keys.TRAIN_GRAD_NORM] = self._grad_norm
            if not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks):  # type: ignore[attr-defined]
                metrics.update(learning_rates(trainer))
            n_samples = float(samples)
            samples_per_s = n_samples / elapsed_s
            metrics[keys.TRAIN_SAMPLES_PER_SECOND] = samples_per_s
            if self.tokens_per_sample is not None:
                metrics[keys.TRAIN_TOKENS_PER_SECOND] = samples_per_s * self.tokens_per_sample
            step_metrics = getattr(pl_module, "step_metrics", None)
            if callable(step_metrics):
                metrics.update({str(k): float(v) for k, v in step_metrics().items()})
            self._energy_samples += n_samples
            if merged is not None:
                self._rows.extend(merged.rows)
                metrics.update(
                    {keys.system_key(k): v for k, v in merged.values.items() if math.isfinite(v)}
                )
                for dev, terms in merged.rle.items():
                    for col, v in terms.items():
                        key = rle_metric_key(dev, col)
                        if key is not None and math.isfinite(v):
                            metrics[key] = v
                metrics.update(self._energy_metrics(merged, step))
                self._log_new_tags(trainer, merged.tags)
            self._overhead_s += time.perf_counter() - t0
            if self._sampler is not None:
                metrics[keys.system_key("telemetry_overhead_milliseconds")] = (
                    self._overhead_s * 1000.0
                )
            self._log_metrics(trainer, metrics, step)
        self._overhead_s = 0.0
        self._window_samples = 0
        self._window_start_s = t0  # the next window includes this step's logging time

    def _energy_metrics(self, merged: Any, step: int) -> dict[str, float]:
        """J/step, samples/J and tokens/J over the optimizer steps since the last energy point.

        Energy counters change only when a sample is taken, so a window without samples logs no
        energy and passes its steps (and training samples) on to the next window that has one:
        ``J/step = window energy / steps since the previous energy point``. Summed over those
        steps the points give back the measured energy exactly, whatever the ratio of sampling
        rate to logging cadence.
        """
        energy = [v for k, v in merged.values.items() if k.endswith("_energy_joules")]
        if not energy:
            return {}
        steps = max(1, step - self._energy_mark_step)
        energy_j = sum(v for v in energy if math.isfinite(v))
        out = {keys.TRAIN_ENERGY_JOULES_PER_STEP: energy_j / steps}
        if energy_j > 0:
            out[keys.TRAIN_SAMPLES_PER_JOULE] = self._energy_samples / energy_j
            if self.tokens_per_sample is not None:
                out[keys.TRAIN_TOKENS_PER_JOULE] = (
                    self._energy_samples * self.tokens_per_sample / energy_j
                )
        self._energy_mark_step = step
        self._energy_samples = 0.0
        return out

    def _log_metrics(self, trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
        """Rank 0: log ``metrics`` at ``step``, leaving out keys that another writer owns.

        A key the module logs itself (it is in ``trainer.callback_metrics``) is the module's; a
        key MLflow's own system-metrics monitor writes into the run is the monitor's.
        """
        own = set(trainer.callback_metrics)
        out = {k: v for k, v in metrics.items() if k not in own}
        if self._skip_keys is not None:
            out = {k: v for k, v in out.items() if not self._skip_keys.match(k)}
        if not out:
            return
        if self._sink is not None and not self._sink.metrics_via_loggers:
            self._sink.log_metrics(out, step)
        for logger in trainer.loggers:
            logger.log_metrics(out, step=step)

    # ------------------------------------------------------------------------------ tags, end

    def _log_new_tags(self, trainer: L.Trainer, tags: Mapping[str, str]) -> None:
        new = {k: v for k, v in tags.items() if self._tags_logged.get(k) != v}
        self._tags_logged.update(new)
        if new:
            self._set_tags(trainer, new)

    def _set_tags(self, trainer: L.Trainer, tags: Mapping[str, str]) -> None:
        if self._sink is not None:
            self._sink.set_tags(tags)

    def _finish(self, trainer: L.Trainer) -> None:
        """Rank 0: summaries, absent-RLE reasons and artifacts from every raw row of the job."""
        import pandas as pd

        if not self._rows:
            return
        frame = pd.DataFrame(self._rows)
        step = current_step(trainer)
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        events_out: list[dict[str, Any]] = []
        if self._missing_windows:
            tags["telemetry.missing_windows"] = str(self._missing_windows)
        for device, df in frame[frame["device"].isin(self._streams_devices(frame))].groupby(
            "device"
        ):
            dev = str(device)
            df = df.sort_values("monotonic_s")
            if "rle_smoothed" in df and df["rle_smoothed"].notna().any():
                metrics[keys.rle_key(dev, "rle_smoothed_mean")] = float(df["rle_smoothed"].mean())
                if "t_sustain_s" not in df or df["t_sustain_s"].isna().all():
                    tags[f"rle.{dev}.collapse"] = "disabled: no temperature sensor"
                else:
                    events_out.extend(self._collapse(dev, df, metrics))
            else:
                missing = [c for c in ("util_pct", "power_w") if c not in df or df[c].isna().all()]
                tags[f"rle.{dev}.absent"] = (
                    f"no {' and no '.join('power source' if c == 'power_w' else 'utilisation' for c in missing)} "
                    "(set telemetry.cpu_power=estimated for an estimated CPU power)"
                    if missing
                    else "inputs not measured"
                )
            if "util_pct" in df and df["util_pct"].notna().any():
                metrics[f"summary/{dev}_utilization_mean_percentage"] = float(df["util_pct"].mean())
            for col, stat_name in (("power_w", "power"), ("temp_c", "temperature")):
                if col in df and df[col].notna().any():
                    s = df[col].dropna()
                    if stat_name == "power":
                        metrics[f"summary/{dev}_power_mean_watts"] = float(s.mean())
                        metrics[f"summary/{dev}_power_p95_watts"] = float(s.quantile(0.95))
                    else:
                        metrics[f"summary/{dev}_temperature_max_celsius"] = float(s.max())
        for k in [c for c in frame.columns if str(c).endswith("_energy_joules")]:
            vals = frame[k].dropna()
            if len(vals) > 1:
                metrics[f"summary/{k}"] = float(vals.iloc[-1] - vals.iloc[0])
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if metrics:
            self._log_metrics(trainer, metrics, step)
        if tags:
            self._set_tags(trainer, tags)
        if self.write_artifacts:
            self._write_artifacts(trainer, frame, events_out)
        self._rows = []

    @staticmethod
    def _collapse(dev: str, df: Any, metrics: dict[str, float]) -> list[dict[str, Any]]:
        """Collapse summary metrics (into ``metrics``) and events with hardware context."""
        from rle.metric import collapse_events, collapse_summary

        cf = df.assign(timestamp=df["monotonic_s"])[["timestamp", "collapse"]]
        summary = collapse_summary(cf)
        for k in ("collapse_events", "collapse_seconds", "collapse_fraction"):
            if k in summary and math.isfinite(float(summary[k])):
                metrics[keys.rle_key(dev, k)] = float(summary[k])
        events: list[dict[str, Any]] = []
        for _, e in collapse_events(cf).iterrows():
            at = df.iloc[(df["monotonic_s"] - float(e["start"])).abs().argmin()]
            events.append(
                {
                    "device": dev,
                    "start_wall_time_s": float(at["wall_time_s"]),
                    "duration_s": float(e.get("duration_s", float("nan"))),
                    "global_step": int(at["global_step"]),
                    "rank": int(at["rank"]),
                    **{c: float(at[c]) for c in _RLE_INPUT_COLUMNS if c in at and at[c] == at[c]},
                }
            )
        return events

    @staticmethod
    def _streams_devices(frame: Any) -> list[str]:
        return [d for d in frame["device"].unique() if not str(d).startswith("rank_")]

    def _write_artifacts(
        self, trainer: L.Trainer, frame: Any, events: list[dict[str, Any]]
    ) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            parquet = Path(tmp) / "samples.parquet"
            frame.to_parquet(parquet, index=False)
            jsonl = Path(tmp) / "events.jsonl"
            jsonl.write_text("".join(json.dumps(e) + "\n" for e in events))
            if self._sink is not None:
                self._sink.log_artifact(str(parquet), "telemetry")
                if events:  # no events, no file (its absence means none)
                    self._sink.log_artifact(str(jsonl), "telemetry")


def _explicit_inputs(rle_cfg: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per device kind, the inputs the config sets explicitly (they beat what sensors report).

    ``telemetry.rle.load.rated_w.<kind>`` -> ``rated_w`` (W) and
    ``telemetry.rle.thermal.limit_c.<kind>`` -> ``limit_c`` (°C), ``kind`` ``cpu`` or ``gpu``.
    Precedence of every per-sample input: explicit config, then the sensor's value (NVML power
    limit and slowdown temperature, RAPL long-term limit), then the profile's default.
    """
    out: dict[str, dict[str, float]] = {}
    for section, leaf, column in (
        ("load", "rated_w", "rated_w"),
        ("thermal", "limit_c", "limit_c"),
    ):
        node = rle_cfg.get(section, {}) or {}
        per_kind = node.get(leaf, {}) if isinstance(node, Mapping) else {}
        for kind, value in (per_kind or {}).items():
            if value is not None:
                out.setdefault(str(kind), {})[column] = float(value)
    return out


def _loggable_terms(terms: dict[str, float]) -> dict[str, float]:
    """Drop what a missing input makes meaningless: every term without RLE, collapse without τ.

    No power source gives α = NaN and RLE = NaN: the device logs no ``rle/`` key at all (the
    leftover terms such as stability would suggest a measurement). Without temperature the
    collapse detector is disabled (docs/rle-metric.md §2.8), so ``collapse`` is not logged as 0.
    """
    if not math.isfinite(terms.get("rle_raw", math.nan)):
        return {}
    if not math.isfinite(terms.get("t_sustain_s", math.nan)):
        return {k: v for k, v in terms.items() if k != "collapse"}
    return terms


def _belongs(key: str, device: str) -> bool:
    if device.startswith("gpu_"):
        return key.startswith(device + "_")
    return not key.startswith(("gpu_", "process_"))


_HOST = socket.gethostname()


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The batch's loss from ``training_step``'s output (a tensor or ``{"loss": ...}``), if any."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        return loss if isinstance(loss, torch.Tensor) else None
    return None


def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """LR of every optimizer and param group, keyed as Lightning's ``LearningRateMonitor`` names them.

    Names come from a ``LearningRateMonitor`` itself (``lr-<Optimizer>``, ``/pg<i>`` or the group's
    ``name`` with several groups, ``-<n>`` for repeated optimizer types, a scheduler's ``name``),
    prefixed ``train/``.

    Returns:
        ``{"train/lr-AdamW": 0.001, ...}``; empty without optimizers.
    """
    monitor = LearningRateMonitor(logging_interval="step")
    sched_names, with_sched, with_sched_types = monitor._find_names_from_schedulers(
        trainer.lr_scheduler_configs
    )
    opt_names, without_sched = monitor._find_names_from_optimizers(
        trainer.optimizers, seen_optimizers=with_sched, seen_optimizer_types=with_sched_types
    )
    out: dict[str, float] = {}
    pairs = [
        (c.scheduler.optimizer, n)
        for c, n in zip(trainer.lr_scheduler_configs, sched_names, strict=True)
    ]
    pairs += list(zip(without_sched, opt_names, strict=True))
    for optimizer, names in pairs:
        for group, name in zip(optimizer.param_groups, names, strict=True):
            out[f"train/{name}"] = float(group["lr"])
    return out


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and "input_ids" in batch:
        return int(batch["input_ids"].shape[0])
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1
