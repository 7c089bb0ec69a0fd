"""``HardwareMonitor``: hardware telemetry, RLE and energy on the training step axis.

Every rank samples its own devices and process in a background :class:`rle.telemetry.Sampler`;
host-wide sources are sampled once per node (local rank 0). At each logging step (step and cadence
from :mod:`rle.callbacks.steps`) every rank drains its window, feeds each device's samples through
the incremental RLE engine (:class:`rle.metric.RLEStream`), appends the raw rows to its own Parquet
part file (:class:`rle.telemetry.samples_file.SampleFileWriter`) and sends rank 0 only a
fixed-size window: one value per quantity and RLE term, whatever the sampling rate. Rank 0 logs
them in one batched call.

Raw samples never accumulate in memory: each rank holds at most one Parquet row group, closes its
part every ``upload_every_s`` seconds and uploads it as
``telemetry/samples/rank_<r>/part-<k>.parquet`` (so a long run's samples can be read while it runs
and survive a crash up to the last upload). At the end each rank summarises its own samples,
reading its parts back one at a time into a :class:`rle.callbacks.summary.SummaryAccumulator`
(per-device statistics, never the rows); rank 0 gathers the small summaries and
logs them, with ``telemetry/events.jsonl`` (only when there are collapse events),
``telemetry/samples_preview.csv`` (the first rows, which the MLflow UI can show) and
``telemetry/samples_schema.json`` (columns, types, rows and parts per rank).

On more than one node, host-scoped keys carry the node (MLflow's convention
``system/<node_id>/<name>``, here ``node_<node_rank>``), as do GPU devices (``node_1/gpu_0``).

Logged metrics (see README "What a run logs"):

=============================================== ============== ==================================
key                                             unit           source
=============================================== ============== ==================================
``system/<quantity>``                           in the name    window mean (max: ``_max_``;
                                                               ``*_joules``: window delta;
                                                               throttle reasons: bitwise OR)
``system/rank_<r>/process_*``                   in the name    per DDP rank
``system/telemetry_overhead_milliseconds``      ms             monitor time on the training
                                                               thread for the window
``rle/<device>/<term>``                         1 (τ: s)       last sample; collapse: any
``train/energy_joules_per_step``                J/step         energy since the last energy point
                                                               / optimizer steps since then
``train/samples_per_joule``, ``tokens_per_joule`` 1/J          where an energy counter exists
=============================================== ============== ==================================

A missing sensor is absent, never zero: sources that cannot be built are reported once and tagged
(``telemetry.unavailable.<source>``), and RLE terms that need an absent input are not logged (the
reason is tagged ``rle.<device>.absent``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from rle.callbacks.gather import (
    RankWindow,
    gather_objects,
    gather_to_rank_zero,
    merge_windows,
    rle_last,
)
from rle.callbacks.route import BackgroundUploader, RunRoute
from rle.callbacks.steps import current_step, should_log, step_counter
from rle.callbacks.summary import (
    RLE_INPUT_COLUMNS,
    SampleSummary,
    SummaryAccumulator,
    first_rows_at,
    merge_summaries,
    summary_columns,
)
from rle.tracking import keys

__all__ = ["HardwareMonitor", "batch_size", "rle_metric_key"]

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

PREVIEW_ROWS = 200
"""Rows of ``telemetry/samples_preview.csv``."""


def rle_metric_key(device: str, column: str) -> str | None:
    """Return the MLflow key of an ``rle.metric`` output column for one device, or ``None``."""
    term = _RLE_TERM_KEYS.get(column)
    return keys.rle_key(device, term) if term else None


def batch_size(batch: Any) -> int:
    """Samples in a batch: ``input_ids`` rows, a tensor's or a sequence's first tensor's rows, else 1."""
    if isinstance(batch, dict) and "input_ids" in batch:
        return int(batch["input_ids"].shape[0])
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1


def _prune_none(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _prune_none(v) for k, v in node.items() if v is not None}
    return node


_HOST = socket.gethostname()


class HardwareMonitor(L.Callback):
    """Sample hardware in the background; log ``system/*``, ``rle/*`` and energy per step.

    Use it alone (``callbacks=[HardwareMonitor()]``) or through
    :class:`~rle.callbacks.telemetry.TelemetryCallback`, which adds the training dynamics.

    Args:
        sources: ``telemetry.sources``: named source entries with ``_target_`` (see
            :func:`rle.telemetry.build_sources`); ``None`` samples the real hardware
            (:data:`rle.telemetry.DEFAULT_SOURCES`); an empty mapping samples nothing.
        sample_hz: Sampling rate of the background sampler, Hz (0 < ``sample_hz`` <= 100).
        rle: ``telemetry.rle`` node: ``profile`` plus overrides (docs/rle-metric.md §10); ``None``
            values mean "the profile's value".
        cpu_rated_w: Rated CPU package power, W, for α when RAPL gives no long-term limit.
        write_artifacts: Upload the sample parts, preview, schema and events.
        upload_every_s: Close and upload each rank's sample part this often, s (> 0).
        batch_size_fn: ``batch -> samples`` for ``train/samples_per_joule`` (default
            :func:`batch_size`).
        length_fn: ``batch -> tokens`` for ``train/tokens_per_joule`` (default: none, or
            ``tokens_per_sample`` x samples).
        tokens_per_sample: Tokens per training sample (when ``length_fn`` is not given).
        row_group_rows: Raw rows a rank buffers before writing a Parquet row group.
        route: A :class:`~rle.callbacks.route.RunRoute` shared with other monitors (internal).

    Raises:
        ValueError: If ``sample_hz``, ``upload_every_s`` or ``tokens_per_sample`` is out of range.
        rle.errors.MetricInputError: If the ``rle`` node names an unknown profile or key.
        lightning.fabric.utilities.exceptions.MisconfigurationException: At ``setup`` if there is
            no MLflow run to write into (see :func:`rle.callbacks.sink.resolve_sink`).
    """

    def __init__(
        self,
        sources: Mapping[str, Any] | None = None,
        sample_hz: float = 1.0,
        rle: Mapping[str, Any] | None = None,
        cpu_rated_w: float | None = None,
        write_artifacts: bool = True,
        upload_every_s: float = 300.0,
        batch_size_fn: Callable[[Any], int] | None = None,
        length_fn: Callable[[Any], int] | None = None,
        tokens_per_sample: int | None = None,
        row_group_rows: int = 256,
        route: RunRoute | None = None,
    ) -> None:
        super().__init__()
        if not sample_hz > 0:
            raise ValueError(f"telemetry.sample_hz must be positive, got {sample_hz}.")
        if not upload_every_s > 0:
            raise ValueError(f"telemetry.upload_every_s must be positive, got {upload_every_s}.")
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
        self.write_artifacts = write_artifacts
        self.upload_every_s = float(upload_every_s)
        self.batch_size_fn = batch_size_fn or batch_size
        self.length_fn = length_fn
        self.tokens_per_sample = tokens_per_sample
        self.row_group_rows = int(row_group_rows)
        self.route = route if route is not None else RunRoute()
        self._owns_route = route is None
        self._reset()

    def _reset(self) -> None:
        self._sampler: Any = None
        self._built: Any = None
        self._aggregator: Any = None
        self._streams: dict[str, Any] = {}
        self._prev_values: dict[str, float] | None = None
        self._prev_t: float | None = None
        self._overhead_s = 0.0
        self._tags_sent = False
        self._tags_logged: dict[str, str] = {}
        self._missing_windows = 0
        self._node_prefix = ""
        self._energy_mark_step = -1  # step of the last energy point (-1: none yet)
        self._energy_samples = 0.0
        self._energy_tokens = 0.0
        self._window_samples = 0.0
        self._window_tokens = 0.0
        self._stepped = False
        self._writer: Any = None
        self._dir: Path | None = None
        self._uploader: BackgroundUploader | None = None
        self._last_upload_s = 0.0
        self._finished = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(
            _sampler=None, _built=None, _aggregator=None, _streams={}, _writer=None, _uploader=None
        )
        return state

    # ------------------------------------------------------------------------------ Lightning

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.route.setup(trainer)
        self._setup(trainer, pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._energy_mark_step = step_counter(trainer) - 1

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
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
        metrics = self.batch_end(trainer, batch)
        if metrics is not None:
            self.route.log_metrics(trainer, metrics, current_step(trainer))

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = self.train_end(trainer)
        self.route.log_metrics(trainer, metrics, current_step(trainer))
        self.shutdown(trainer)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.after_exception(trainer)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close_sources()

    # ------------------------------------------------------------------------------ parts API

    def _setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build the sources, start the sampler and open this rank's sample file."""
        if trainer.num_nodes > 1:
            self._node_prefix = f"node_{trainer.node_rank}/"
        self._set_inventory(trainer)
        if not self.sources_cfg:
            return
        from rle.telemetry import Sampler, WindowAggregator, build_sources
        from rle.telemetry.samples_file import SampleFileWriter

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
        self._dir = Path(tempfile.mkdtemp(prefix=f"rle-samples-rank{trainer.global_rank}-"))
        self._writer = SampleFileWriter(self._dir, row_group_rows=self.row_group_rows)
        self._uploader = self._make_uploader(trainer) if self.write_artifacts else None
        self._last_upload_s = time.monotonic()
        self._sampler = Sampler(
            list(self._built.sources.values()), sample_hz=self.sample_hz, join_timeout_s=2.0
        )
        self._sampler.start()

    def _make_uploader(self, trainer: L.Trainer) -> BackgroundUploader | None:
        """Rank 0 uploads through its sink; other ranks through a client of the same store."""
        if self.route.sink is not None:
            # rle's spooling logger copies each part into its spool and sends it in the background
            return BackgroundUploader(self.route.sink.log_artifact)
        if self.route.run_id is None or self.route.tracking_uri is None:
            return None
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.route.tracking_uri)
        run_id = self.route.run_id
        return BackgroundUploader(
            lambda path, artifact_path: client.log_artifact(run_id, path, artifact_path)
        )

    def _set_inventory(self, trainer: L.Trainer) -> None:
        """Hardware inventory tags of every node (``hw.*``; ``hw.node_<r>.*`` on other nodes)."""
        from rle.telemetry.inventory import hardware_inventory

        mine = hardware_inventory() if trainer.local_rank == 0 else {}
        if trainer.num_nodes > 1:
            gathered = gather_objects(
                (trainer.node_rank, mine), trainer.global_rank, trainer.world_size
            )
        else:
            gathered = [(0, mine)]
        if not trainer.is_global_zero or gathered is None:
            return
        tags: dict[str, str] = {}
        for node_rank, inv in gathered:
            if not inv:
                continue
            prefix = "hw." if node_rank == 0 else f"hw.node_{node_rank}."
            tags.update({prefix + k: v for k, v in inv.items()})
        self.route.set_tags(tags)

    def batch_end(self, trainer: L.Trainer, batch: Any) -> dict[str, float] | None:
        """Count the batch; at a logging step, collect the window (every rank).

        Returns:
            On rank 0 at a logging step, the metrics to log; else ``None``.
        """
        self._window_samples += self.batch_size_fn(batch)
        if self.length_fn is not None:
            self._window_tokens += self.length_fn(batch)
        if not self._stepped:
            return None  # gradient accumulation: no optimizer step in this batch
        self._stepped = False
        if self._sampler is None:
            return None
        t0 = time.perf_counter()
        self._sampler.set_step(step_counter(trainer) + 1)
        logging_step = should_log(trainer)
        metrics = self._log_window(trainer) if logging_step else None
        self._overhead_s += time.perf_counter() - t0
        if metrics is not None:
            metrics[keys.system_key("telemetry_overhead_milliseconds")] = self._overhead_s * 1000.0
        if logging_step:
            self._overhead_s = 0.0
        return metrics

    def _log_window(self, trainer: L.Trainer) -> dict[str, float] | None:
        merged = self._collect(trainer)
        if time.monotonic() - self._last_upload_s >= self.upload_every_s:
            self._roll_and_upload(trainer)
        if merged is None:
            return None
        metrics: dict[str, float] = {
            keys.system_key(k): v for k, v in merged.values.items() if math.isfinite(v)
        }
        for dev, terms in merged.rle.items():
            for col, v in terms.items():
                key = rle_metric_key(dev, col)
                if key is not None and math.isfinite(v):
                    metrics[key] = v
        metrics.update(self._energy_metrics(merged, current_step(trainer)))
        new = {k: v for k, v in merged.tags.items() if self._tags_logged.get(k) != v}
        self._tags_logged.update(new)
        self.route.set_tags(new)
        return metrics

    def train_end(self, trainer: L.Trainer) -> dict[str, float]:
        """Closing sample, last window, every rank's summaries (collective on every rank).

        Returns:
            On rank 0, the summary metrics to log at the last step; ``{}`` elsewhere.
        """
        if self._sampler is None:
            return {}
        # one closing sample, so even a run shorter than a sampling period has one
        self._sampler.stop()
        if not self._sampler.is_running:  # a hung source keeps its thread: no closing sample
            self._sampler.set_step(current_step(trainer))
            self._sampler.sample_now()
        self._collect(trainer, final=True)
        mine = self._summarize_own(trainer)
        gathered = gather_objects(mine, trainer.global_rank, trainer.world_size)
        if gathered is None:
            return {}
        return self._publish(trainer, merge_summaries(gathered))

    def after_exception(self, trainer: L.Trainer) -> None:
        """No collectives: every rank uploads its own samples; rank 0 publishes its summary."""
        if self._sampler is None or self._finished:
            self._close_sources()
            return
        self._sampler.stop()
        try:
            self._drain_rows(trainer)
            summary = self._summarize_own(trainer)
            if trainer.is_global_zero:
                metrics = self._publish(trainer, merge_summaries([summary]))
                self.route.log_metrics(trainer, metrics, current_step(trainer))
        finally:
            self._close_files()
            self._close_sources()

    def shutdown(self, trainer: L.Trainer, close_route: bool | None = None) -> None:
        """Finish uploads, stop the sources, flush the route; then wait for every rank.

        Args:
            trainer: The trainer.
            close_route: Flush the route (default: when this monitor owns it).
        """
        self._close_files()
        self._close_sources()
        if self._owns_route if close_route is None else close_route:
            self.route.close()
        # the other ranks wait for rank 0's summaries and uploads, so no rank tears its process
        # group down while another is still inside the callback
        trainer.strategy.barrier("rle_telemetry_end")

    # ------------------------------------------------------------------------------ windows

    def _drain_rows(self, trainer: L.Trainer) -> RankWindow:
        """Drain this rank's sampler, stream its rows to the sample file, reduce the window."""
        from rle.metric import RLEStream
        from rle.telemetry import prefix_keys, rle_inputs

        rank = trainer.global_rank
        window = RankWindow(
            rank=rank, train_samples=self._window_samples, train_tokens=self._tokens()
        )
        self._window_samples = 0.0
        self._window_tokens = 0.0
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
        rows: list[dict[str, Any]] = []
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
                rows.append({**base, "device": f"rank_{rank}", **proc})
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
                rows.append({**base, "device": device, **own, **proc, **inp, **point})
        if self._writer is not None and rows:
            for part in self._writer.append(rows):
                self._upload(trainer, part)
        window.rle = {d: _loggable_terms(rle_last(p)) for d, p in points.items()}
        return window

    def _tokens(self) -> float:
        if self.length_fn is not None:
            return self._window_tokens
        if self.tokens_per_sample is not None:
            return self._window_samples * self.tokens_per_sample
        return math.nan

    def _collect(self, trainer: L.Trainer, final: bool = False) -> Any:
        window = self._drain_rows(trainer)
        gathered = gather_to_rank_zero(window, trainer.global_rank, trainer.world_size)
        if gathered is None:
            return None
        merged = merge_windows(gathered)
        if merged.missing_ranks and self._sampler is not None and not final:
            self._missing_windows += 1
            if self._missing_windows == 1:
                log.warning(
                    "No telemetry sample from rank(s) %s in the window ending at step %d "
                    "(sample_hz=%s is slower than the logging cadence, or a source stalled); said "
                    "once, counted in the run tag telemetry.missing_windows.",
                    merged.missing_ranks,
                    current_step(trainer),
                    self.sample_hz,
                )
        return merged

    def _energy_metrics(self, merged: Any, step: int) -> dict[str, float]:
        """J/step, samples/J and tokens/J over the optimizer steps since the last energy point.

        Energy counters change only when a sample is taken, so a window without samples logs no
        energy and passes its steps (and training samples) on to the next window that has one:
        ``J/step = window energy / steps since the previous energy point``. Summed over those
        steps the points give back the measured energy exactly, whatever the ratio of sampling
        rate to logging cadence.
        """
        self._energy_samples += merged.train_samples
        self._energy_tokens += merged.train_tokens
        energy = [v for k, v in merged.values.items() if k.endswith("_energy_joules")]
        if not energy:
            return {}
        steps = max(1, step - self._energy_mark_step)
        energy_j = sum(v for v in energy if math.isfinite(v))
        out = {keys.TRAIN_ENERGY_JOULES_PER_STEP: energy_j / steps}
        if energy_j > 0:
            out[keys.TRAIN_SAMPLES_PER_JOULE] = self._energy_samples / energy_j
            if math.isfinite(self._energy_tokens):
                out[keys.TRAIN_TOKENS_PER_JOULE] = self._energy_tokens / energy_j
        self._energy_mark_step = step
        self._energy_samples = 0.0
        self._energy_tokens = 0.0
        return out

    # ------------------------------------------------------------------------------ files

    def _upload(self, trainer: L.Trainer, part: Path) -> None:
        if self._uploader is None:
            return
        self._uploader.submit(part, f"{keys.SAMPLES_DIR}/rank_{trainer.global_rank}")

    def _roll_and_upload(self, trainer: L.Trainer) -> None:
        if self._writer is not None:
            for part in self._writer.roll():
                self._upload(trainer, part)
        self._last_upload_s = time.monotonic()

    def _summarize_own(self, trainer: L.Trainer) -> SampleSummary:
        """Close this rank's sample file and summarise what it holds (read back, some columns)."""
        import pyarrow.parquet as pq

        from rle.telemetry.samples_file import iter_sample_parts, read_sample_files

        if self._writer is None:
            return SampleSummary()
        for part in self._writer.roll():
            self._upload(trainer, part)
        self._finished = True
        parts = list(self._writer.closed_parts)
        schemas = [pq.read_schema(p) for p in parts]
        names: dict[str, str] = {}
        for schema in schemas:
            names.update({f.name: str(f.type) for f in schema})
        # one part at a time: the accumulator keeps per-device statistics, not the rows
        acc = SummaryAccumulator(self._node_prefix)
        for chunk in iter_sample_parts(parts, columns=summary_columns(names)):
            acc.add(chunk)
        summary = acc.finish(lambda device, starts: _rows_at(parts, device, starts))
        _release_arrow_memory()
        summary.ranks = {
            str(trainer.global_rank): {"rows": self._writer.rows_written, "parts": len(parts)}
        }
        if trainer.is_global_zero and parts:
            summary.columns = names
            summary.preview = read_sample_files(_first_parts(parts, PREVIEW_ROWS)).head(
                PREVIEW_ROWS
            )
        return summary

    def _publish(self, trainer: L.Trainer, summary: SampleSummary) -> dict[str, float]:
        """Rank 0: tags, events, preview and schema artifacts; returns the summary metrics."""
        tags = dict(summary.tags)
        if self._missing_windows:
            tags["telemetry.missing_windows"] = str(self._missing_windows)
        self.route.set_tags(tags)
        if self.write_artifacts and self.route.sink is not None:
            self._write_artifacts(summary)
        return summary.metrics

    def _write_artifacts(self, summary: SampleSummary) -> None:
        sink = self.route.sink
        with tempfile.TemporaryDirectory() as tmp:
            if summary.events:  # no events, no file (its absence means none)
                jsonl = Path(tmp) / "events.jsonl"
                jsonl.write_text("".join(json.dumps(e) + "\n" for e in summary.events))
                sink.log_artifact(str(jsonl), "telemetry")
            if summary.preview is not None:
                csv = Path(tmp) / Path(keys.SAMPLES_PREVIEW_ARTIFACT).name
                summary.preview.to_csv(csv, index=False)
                sink.log_artifact(str(csv), "telemetry")
            schema = Path(tmp) / Path(keys.SAMPLES_SCHEMA_ARTIFACT).name
            schema.write_text(
                json.dumps(
                    {
                        "samples": f"{keys.SAMPLES_DIR}/rank_<r>/part-<k>.parquet",
                        "columns": summary.columns,
                        "ranks": summary.ranks,
                        "preview": keys.SAMPLES_PREVIEW_ARTIFACT,
                        "preview_rows": PREVIEW_ROWS,
                    },
                    indent=2,
                )
            )
            sink.log_artifact(str(schema), "telemetry")

    def _close_files(self) -> None:
        self._writer = None
        if self._uploader is not None:
            if not self._uploader.close(timeout_s=120.0) or self._uploader.failed:
                log.warning(
                    "Not every sample part reached the run; the rest stay in %s.", self._dir
                )
                self._dir = None  # keep the folder
            self._uploader = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _close_sources(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._built is not None:
            self._built.close()
            self._built = None


_EVENT_CONTEXT = ("device", "monotonic_s", "wall_time_s", "global_step", "rank", *RLE_INPUT_COLUMNS)


def _rows_at(parts: list[Path], device: str, starts: Sequence[float]) -> dict[float, Any]:
    """A second pass over the parts: ``device``'s first row at each collapse-event start time.

    Args:
        parts: This rank's sample parts.
        device: The device whose events start at ``starts``.
        starts: Event start times, ``monotonic_s`` values of its rows (s).

    Returns:
        ``{start: row}`` (pandas Series with the event-context columns).
    """
    from rle.telemetry.samples_file import iter_sample_parts

    out: dict[float, Any] = {}
    for chunk in iter_sample_parts(parts, columns=_EVENT_CONTEXT):
        for start, row in first_rows_at(chunk, device, starts).items():
            out.setdefault(start, row)
        if len(out) == len(set(starts)):
            break
    return out


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's pool kept from reading the parts back to the system.

    pyarrow's default pool (mimalloc or jemalloc) keeps freed pages for reuse; after the
    end-of-run read they would stay resident for the rest of the process.
    """
    import pyarrow as pa

    with contextlib.suppress(AttributeError, NotImplementedError):  # pyarrow < 9
        pa.default_memory_pool().release_unused()


def _first_parts(parts: list[Path], rows: int) -> list[Path]:
    """The leading parts that hold at least ``rows`` rows (all of them if fewer)."""
    import pyarrow.parquet as pq

    out: list[Path] = []
    seen = 0
    for p in parts:
        out.append(p)
        seen += pq.ParquetFile(p).metadata.num_rows
        if seen >= rows:
            break
    return out


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
