"""Multi-node key scheme: node-prefixed devices parse back to the same device everywhere."""

from __future__ import annotations

import pytest

from rle.tracking import keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("system/gpu_0_power_usage_watts", ("gpu_0", "power_usage_watts")),
        ("system/node_1/gpu_0_power_usage_watts", ("node_1/gpu_0", "power_usage_watts")),
        ("system/node_0/cpu_package_power_watts", ("node_0/cpu", "package_power_watts")),
        ("system/rank_1/process_cpu_percentage", None),
        ("system/node_1/system_memory_usage_percentage", None),
    ],
)
def test_system_keys_split_into_node_scoped_devices(key: str, expected: object) -> None:
    assert keys.split_system_key(key) == expected


def test_rle_keys_round_trip_with_and_without_a_node() -> None:
    for device in ("gpu_0", "cpu", "node_1/gpu_0", "node_0/cpu"):
        assert keys.split_rle_key(keys.rle_key(device, "rle_smoothed")) == (device, "rle_smoothed")
    assert keys.split_rle_key("rle/a/b/c") is None


def test_device_quantity_keys_carry_the_node() -> None:
    out = keys.device_quantity_keys("node_1/gpu_0")
    assert out["power_w"] == "system/node_1/gpu_0_power_usage_watts"
    assert out["rle_smoothed"] == "rle/node_1/gpu_0/rle_smoothed"
    assert keys.device_quantity_keys("gpu_0")["power_w"] == "system/gpu_0_power_usage_watts"
    assert keys.split_node("node_12/cpu") == ("node_12/", "cpu")
    assert keys.split_node("rank_1/x") == ("", "rank_1/x")
