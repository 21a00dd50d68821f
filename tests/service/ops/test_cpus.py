"""CPUs from the affinity mask and the cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

from service.ops.cpus import available_cpus

NONE = (Path("/nonexistent/quota"), Path("/nonexistent/period"))


def test_a_quota_caps_the_cpus(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    v2 = tmp_path / "cpu.max"
    v2.write_text("max 100000\n")
    assert available_cpus(v2, NONE) == cores
    v2.write_text("50000 100000\n")  # half a CPU still runs one thread
    assert available_cpus(v2, NONE) == 1
    v2.write_text(f"{cores * 100000 * 4} 100000\n")  # a quota above the cores changes nothing
    assert available_cpus(v2, NONE) == cores


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("-1\n")
    period.write_text("100000\n")
    missing = tmp_path / "no-cpu.max"
    assert available_cpus(missing, (quota, period)) == len(os.sched_getaffinity(0))
    quota.write_text("100000\n")
    assert available_cpus(missing, (quota, period)) == 1
