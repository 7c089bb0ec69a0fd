"""Metric, param and tag names shared by every writer and reader of ``rle`` runs.

The single source of the key names listed in ``docs/rle-metric.md`` §5: telemetry under ``system/``
(MLflow's own names where the quantity is the same), the RLE index under ``rle/<device>/`` and the
training dynamics under ``train/``. Units are part of the names (MLflow's spelling: ``_percentage``,
``_megabytes`` = bytes / 1e6, ``_watts``, ``_celsius``, ``_joules``, ``_megahertz``, ``_seconds``).
"""

from __future__ import annotations

__all__ = [
    "TRAIN_ENERGY_JOULES_PER_STEP",
    "TRAIN_GRAD_NORM",
    "TRAIN_LOSS",
    "TRAIN_LR",
    "TRAIN_SAMPLES_PER_JOULE",
    "TRAIN_SAMPLES_PER_SECOND",
    "TRAIN_TOKENS_PER_JOULE",
    "TRAIN_TOKENS_PER_SECOND",
    "SYNTHETIC_DUTY_CYCLE_ACHIEVED",
    "SYNTHETIC_INTENSITY_TARGET",
    "rle_key",
    "system_key",
    # telemetry quantity names and tags (rle.telemetry)
    "TAG_TELEMETRY_REFUSED_KEYS",
    "TAG_TELEMETRY_SOURCES",
    "TAG_TELEMETRY_UNAVAILABLE",
    "gpu_quantity",
    "power_source_tag",
    "rank_quantity",
    "temp_source_tag",
    "unavailable_reason_tag",
    # imported recordings (rle.ingest)
    "SAMPLES_ARTIFACT",
    "SAMPLES_DIR",
    "SAMPLES_PREVIEW_ARTIFACT",
    "SAMPLES_SCHEMA_ARTIFACT",
    "TAG_CONTENT_SHA256",
    "TAG_LEGACY_FORMAT",
    "TAG_PROFILE",
    "TAG_SEGMENT",
    "TAG_SOURCE",
    "TAG_STEP_KIND",
    "legacy_column_key",
    "profile_rle_key",
    "recompute_error_key",
    # reader side (rle.tracking.reader, rle.evaluate)
    "EVENTS_ARTIFACT",
    "ROLE_EVALUATION",
    "ROLE_SWEEP_CHILD",
    "ROLE_SWEEP_PARENT",
    "TAG_KIND",
    "TAG_PARENT_RUN_ID",
    "TAG_ROLE",
    "TAG_SWEEP_ID",
    "TAG_WORKLOAD",
    "TRAIN_KEYS_FOR_EVALUATION",
    # run ownership and closing (rle.train, rle.sync --close-dead)
    "END_REASON_CLOSED_BY_USER",
    "END_REASON_PROCESS_GONE",
    "TAG_CLOSED_BY",
    "TAG_END_REASON",
    "TAG_HOST",
    "TAG_PID",
    "TAG_PID_START_TIME",
    "device_quantity_keys",
    "split_node",
    "split_rle_key",
    "split_system_key",
]

TRAIN_LOSS = "train/loss"
"""Training loss at the step (dimensionless, mean cross-entropy in nats per token for LMs)."""
TRAIN_GRAD_NORM = "train/grad_norm"
"""Total L2 norm of all gradients, after unscaling and before clipping."""
TRAIN_LR = "train/lr"
"""Learning rate of the first parameter group after the scheduler step."""
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
"""Training samples per second over the logging window, all ranks together."""
TRAIN_TOKENS_PER_SECOND = "train/tokens_per_second"
"""Training tokens per second over the logging window, all ranks together."""
TRAIN_ENERGY_JOULES_PER_STEP = "train/energy_joules_per_step"
"""Energy of all measured devices (counter deltas) over the window, per optimizer step, J."""
TRAIN_SAMPLES_PER_JOULE = "train/samples_per_joule"
"""Training samples (all ranks) per joule of measured device energy over the window."""
TRAIN_TOKENS_PER_JOULE = "train/tokens_per_joule"
"""Training tokens (all ranks) per joule of measured device energy over the window."""
SYNTHETIC_INTENSITY_TARGET = "synthetic/intensity_target"
"""Commanded duty cycle of the synthetic load in the step's period (fraction 0..1)."""
SYNTHETIC_DUTY_CYCLE_ACHIEVED = "synthetic/duty_cycle_achieved"
"""Measured busy time / measured period of the synthetic load's training process (fraction 0..1)."""


def system_key(name: str) -> str:
    """Return the MLflow key of a telemetry quantity.

    Args:
        name: Quantity name with its unit suffix, e.g. ``"gpu_0_power_usage_watts"``.

    Returns:
        ``"system/" + name``.
    """
    return f"system/{name}"


def rle_key(device: str, name: str) -> str:
    """Return the MLflow key of an RLE term for one device.

    Args:
        device: Device label, ``"cpu"`` or ``"gpu_<i>"`` (CUDA ordinal as the job sees it).
        name: Term name, e.g. ``"rle_smoothed"``, ``"e_th"``, ``"collapse"``.

    Returns:
        ``"rle/<device>/<name>"``.
    """
    return f"rle/{device}/{name}"


# --- telemetry quantity names and tags (written by rle.telemetry) -----------------------------

TAG_TELEMETRY_SOURCES = "telemetry.sources"
"""Run tag: comma-separated names of the telemetry sources that ran."""
TAG_TELEMETRY_UNAVAILABLE = "telemetry.unavailable"
"""Run tag: comma-separated names of configured telemetry sources that were unavailable."""
TAG_TELEMETRY_REFUSED_KEYS = "telemetry.refused_keys"
"""Run tag: the metric keys whose points the logger did not log (a key MLflow would refuse, or a
value that is not a number), as a sorted JSON list; set by
:class:`rle.tracking.logger.MLflowRunLogger` each time it refuses a new key."""


def unavailable_reason_tag(source: str) -> str:
    """Return the run tag holding why a telemetry source was unavailable.

    Args:
        source: Source name as configured, e.g. ``"gpu"``.

    Returns:
        ``"telemetry.unavailable.<source>"``.
    """
    return f"telemetry.unavailable.{source}"


def power_source_tag(device: str) -> str:
    """Return the run tag naming where a device's power comes from.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.

    Returns:
        ``"power_source.<device>"``; values ``nvml|rapl|estimated|fake|none``.
    """
    return f"power_source.{device}"


def temp_source_tag(device: str) -> str:
    """Return the run tag naming where a device's temperature comes from.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.

    Returns:
        ``"temp_source.<device>"``; values ``nvml|hwmon|fake|none``.
    """
    return f"temp_source.{device}"


def gpu_quantity(index: int, quantity: str) -> str:
    """Return the name of a per-GPU telemetry quantity (without the ``system/`` prefix).

    Args:
        index: CUDA ordinal as the job sees it.
        quantity: Quantity with its unit, e.g. ``"power_usage_watts"``.

    Returns:
        ``"gpu_<index>_<quantity>"``; pass it to :func:`system_key` for the MLflow key.
    """
    return f"gpu_{index}_{quantity}"


def rank_quantity(rank: int, quantity: str) -> str:
    """Return the name of a per-rank telemetry quantity (without the ``system/`` prefix).

    Args:
        rank: Global DDP rank.
        quantity: Quantity with its unit, e.g. ``"process_cpu_percentage"``.

    Returns:
        ``"rank_<rank>/<quantity>"``.
    """
    return f"rank_{rank}/{quantity}"


# --- imported recordings (written by rle.ingest, read by the evaluation) ----------------------

SAMPLES_ARTIFACT = "telemetry/samples.parquet"
"""Run artifact holding the raw samples of an imported recording (one table per run)."""
SAMPLES_DIR = "telemetry/samples"
"""Run artifact folder of a training run's streamed samples: ``rank_<r>/part-<k>.parquet``."""
SAMPLES_PREVIEW_ARTIFACT = "telemetry/samples_preview.csv"
"""First rows of rank 0's samples as CSV, which the MLflow UI shows (it cannot show Parquet)."""
SAMPLES_SCHEMA_ARTIFACT = "telemetry/samples_schema.json"
"""Columns and types of the samples, and rows and parts per rank."""
TAG_SOURCE = "rle.source"
"""Run tag: where the data came from (``rle_lab_v03``, ``rle_lab_v03_old``, ``rle_lab_v2``, ``rle_lab_joint``)."""
TAG_PROFILE = "rle.profile"
"""Run tag: the metric profile of the run's ``rle/`` values (``legacy_v03``, ``legacy_v2``, ``default``)."""
TAG_LEGACY_FORMAT = "rle.legacy_format"
"""Run tag: format of the imported file (``v03``, ``v03_old``, ``v2``)."""
TAG_CONTENT_SHA256 = "rle.content_sha256"
"""Run tag: SHA-256 of the imported file (or bundle); re-imports are found by it."""
TAG_SEGMENT = "rle.segment"
"""Run tag: index of the recording segment within the imported file."""
TAG_STEP_KIND = "step.kind"
"""Run tag: what the metric step counts (``sample_index`` for imported telemetry)."""

_LEGACY_RLE_NAMES = {
    "rle_raw": "rle_raw",
    "rle_smoothed": "rle_smoothed",
    "rle_norm": "rle_norm",
    "rolling_peak": "rolling_peak",
    "collapse": "collapse",
    "a_load": "a_load",
    "E_th": "e_th",
    "E_pw": "e_pw",
    "t_sustain_s": "t_sustain_seconds",
}


def legacy_column_key(device: str, column: str) -> str | None:
    """Return our metric key for a column of the RLE lab's CSVs (``docs/rle-metric.md`` §5 mapping).

    Args:
        device: ``"gpu_<i>"`` or ``"cpu"``.
        column: Legacy column name (``rle_smoothed``, ``E_th``, ``util_pct``, ``fan_pct``, ...).

    Returns:
        The key, or ``None`` for columns kept only in the attached original file.
    """
    if column in _LEGACY_RLE_NAMES:
        return rle_key(device, _LEGACY_RLE_NAMES[column])
    gpu = device.startswith("gpu_")
    names = {
        "util_pct": (f"{device}_utilization_percentage", "cpu_utilization_percentage"),
        "temp_c": (f"{device}_temperature_celsius", "cpu_package_temperature_celsius"),
        "power_w": (f"{device}_power_usage_watts", "cpu_package_power_watts"),
        "fan_pct": (f"{device}_fan_speed_percentage", None),
        "gpu_fan_pct": (f"{device}_fan_speed_percentage", None),
        "gpu_clock_mhz": (f"{device}_graphics_clock_megahertz", None),
    }
    pair = names.get(column)
    if pair is None:
        return None
    name = pair[0] if gpu else pair[1]
    return system_key(name) if name else None


def profile_rle_key(profile: str, device: str, name: str) -> str:
    """Return the key of an RLE term computed with another profile beside a run's own values.

    Args:
        profile: Profile name, e.g. ``"default"`` for the corrected metric of an import.
        device: ``"cpu"`` or ``"gpu_<i>"``.
        name: Term name as in :func:`rle_key`.

    Returns:
        ``"rle_<profile>/<device>/<name>"``.
    """
    return f"rle_{profile}/{device}/{name}"


def recompute_error_key(device: str, name: str) -> str:
    """Return the key of the largest deviation of a recomputed legacy column from the stored one.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.
        name: Term name as in :func:`rle_key` (``rle_smoothed``, ``e_th``, ...).

    Returns:
        ``"import/<device>/<name>_max_abs_error"``.
    """
    return f"import/{device}/{name}_max_abs_error"


# --- reader side (rle.tracking.reader, rle.evaluate) ------------------------------------------

EVENTS_ARTIFACT = "telemetry/events.jsonl"
"""Run artifact listing the collapse events of a training run (one JSON object per line)."""
TAG_WORKLOAD = "workload"
"""Run tag: the workload name (``distilgpt2``, ``synthetic``, ...); the default fingerprint group."""
TAG_ROLE = "rle.role"
"""Run tag: ``sweep_parent``, ``sweep_child`` or ``evaluation``."""
TAG_KIND = "rle.kind"
"""Run tag: what kind of run this is (``evaluation`` for the runs ``rle.evaluate`` writes)."""
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
"""Run tag (MLflow's own): the parent run of a sweep child."""
TAG_SWEEP_ID = "rle.sweep_id"
"""Run tag: id of the Hydra multirun a parent or child belongs to."""
ROLE_SWEEP_PARENT = "sweep_parent"
"""Value of :data:`TAG_ROLE` on a sweep's parent run."""
ROLE_SWEEP_CHILD = "sweep_child"
"""Value of :data:`TAG_ROLE` on a sweep's child runs."""
ROLE_EVALUATION = "evaluation"
"""Value of :data:`TAG_ROLE` (and :data:`TAG_KIND`) on an evaluation run."""

# --- run ownership (rle.train, the sweep parent, rle.sync --close-dead) ------------------------

TAG_HOST = "host"
"""Run tag: host name of the machine whose process created (and owns) the run."""
TAG_PID = "rle.pid"
"""Run tag: process id of the run's owner, the process that creates, logs into and ends it."""
TAG_PID_START_TIME = "rle.pid_start_time"
"""Run tag: the owner's process start time (seconds since the epoch, as ``psutil`` reports it),
so that a later process reusing the pid is not taken for the owner."""
TAG_END_REASON = "rle.end_reason"
"""Run tag: why a run ended ``KILLED`` (set by ``rle.train`` after a signal and by
``rle.sync --close-dead``)."""
END_REASON_SIGNAL = "signal"
"""Value of :data:`TAG_END_REASON`: the job got SIGTERM/SIGINT and stopped (:data:`TAG_SIGNAL`)."""
TAG_SIGNAL = "rle.signal"
"""Run tag: the signal that stopped the job (``SIGTERM``, ``SIGINT``)."""
END_REASON_PROCESS_GONE = "process_gone"
"""Value of :data:`TAG_END_REASON`: the owner process no longer exists on its host."""
END_REASON_CLOSED_BY_USER = "closed_by_user"
"""Value of :data:`TAG_END_REASON`: closed on request (``--run-id``) without checking its owner,
which runs on another host."""
TAG_CLOSED_BY = "rle.closed_by"
"""Run tag: who closed the run (``rle.sync on <host>``), next to :data:`TAG_END_REASON`."""

TRAIN_KEYS_FOR_EVALUATION: tuple[str, ...] = (
    TRAIN_LOSS,
    TRAIN_GRAD_NORM,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TOKENS_PER_SECOND,
    TRAIN_ENERGY_JOULES_PER_STEP,
)
"""``train/`` keys the evaluation reads from the metric histories."""

_DEVICE_QUANTITIES_GPU = {
    "util_pct": "utilization_percentage",
    "power_w": "power_usage_watts",
    "temp_c": "temperature_celsius",
    "sm_clock_megahertz": "sm_clock_megahertz",
    "energy_joules": "energy_joules",
    "throttle_reasons": "throttle_reasons",
}
_DEVICE_QUANTITIES_CPU = {
    "util_pct": "cpu_utilization_percentage",
    "power_w": "cpu_package_power_watts",
    "temp_c": "cpu_package_temperature_celsius",
    "energy_joules": "cpu_package_energy_joules",
}
_RLE_TERMS_FOR_EVALUATION = {"rle_smoothed": "rle_smoothed", "collapse": "collapse"}


def device_quantity_keys(device: str) -> dict[str, str]:
    """Return the step-level metric keys that stand in for a device's sample columns.

    Runs without a ``telemetry/samples.parquet`` artifact are evaluated from their ``system/``
    and ``rle/`` window values; this maps the evaluation's device-neutral column names to them.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.

    Returns:
        ``{column: key}``, e.g. ``{"power_w": "system/gpu_0_power_usage_watts",
        "rle_smoothed": "rle/gpu_0/rle_smoothed", ...}``. Columns ``util_pct`` (%), ``power_w``
        (W), ``temp_c`` (°C), ``energy_joules`` (J, window delta), ``sm_clock_megahertz`` (MHz,
        GPUs), ``throttle_reasons`` (bitmask, GPUs), ``rle_smoothed`` (1), ``collapse`` (0/1).
    """
    node, local = split_node(device)
    if local.startswith("gpu_"):
        out = {c: system_key(f"{node}{local}_{q}") for c, q in _DEVICE_QUANTITIES_GPU.items()}
    else:
        out = {c: system_key(node + q) for c, q in _DEVICE_QUANTITIES_CPU.items()}
    out.update({c: rle_key(device, t) for c, t in _RLE_TERMS_FOR_EVALUATION.items()})
    return out


def split_node(device: str) -> tuple[str, str]:
    """Split a device label into its node prefix and its local name.

    On more than one node devices are labelled ``node_<r>/<device>`` (``node_1/gpu_0``); host-scoped
    keys carry the same prefix (``system/node_1/cpu_utilization_percentage``, MLflow's own
    ``system/<node_id>/<name>`` convention).

    Args:
        device: ``"gpu_0"``, ``"cpu"``, ``"node_1/gpu_0"``, ...

    Returns:
        ``(prefix, local)``: ``("node_1/", "gpu_0")`` or ``("", "gpu_0")``.
    """
    head, sep, tail = device.partition("/")
    if sep and head.startswith("node_") and head.removeprefix("node_").isdigit():
        return head + "/", tail
    return "", device


def split_rle_key(key: str) -> tuple[str, str] | None:
    """Split an RLE key into device and term (the inverse of :func:`rle_key`).

    Args:
        key: A metric key, e.g. ``"rle/gpu_0/rle_smoothed"``.

    Returns:
        ``(device, term)``, or ``None`` if ``key`` is not an ``rle/<device>/<term>`` key.
    """
    parts = key.split("/")
    if len(parts) == 4 and split_node("/".join(parts[1:3]))[0]:  # rle/node_<r>/<device>/<term>
        parts = [parts[0], "/".join(parts[1:3]), parts[3]]
    if len(parts) != 3 or parts[0] != "rle" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def split_system_key(key: str) -> tuple[str, str] | None:
    """Split a per-device telemetry key into device and quantity.

    Args:
        key: A metric key, e.g. ``"system/gpu_0_power_usage_watts"`` or
            ``"system/cpu_package_power_watts"``.

    Returns:
        ``("gpu_0", "power_usage_watts")`` / ``("cpu", "package_power_watts")``, or ``None`` for
        keys that belong to no device (memory, per-rank process readings, overhead).
    """
    if not key.startswith("system/"):
        return None
    node, name = split_node(key.removeprefix("system/"))
    if "/" in name:
        return None
    if name.startswith("gpu_"):
        index, _, quantity = name.removeprefix("gpu_").partition("_")
        if index.isdigit() and quantity:
            return f"{node}gpu_{index}", quantity
        return None
    if name.startswith("cpu_"):
        return f"{node}cpu", name.removeprefix("cpu_")
    return None
