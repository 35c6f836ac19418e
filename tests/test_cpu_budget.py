"""The CPU budget (rtserver/server/cpu_budget.py): bursts from idle, costs, the counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtserver.errors import Overloaded
from rtserver.server.cpu_budget import (
    PRIOR_SESSION_CORES,
    SETTLE_S,
    CpuBudget,
    CpuCounter,
    CpuReading,
)


class ScriptedCounter(CpuCounter):
    """A CPU counter whose readings the test sets: `busy_cores` from a given time on."""

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self.use_cgroup = False
        self.now = 0.0
        self.busy_s = 0.0

    def advance(self, seconds: float, busy_cores: float) -> None:
        self.now += seconds
        self.busy_s += seconds * busy_cores

    def read(self) -> CpuReading:
        return CpuReading(self.now, self.busy_s)


class Machine:
    """A budget on a scripted 2-core machine, with a live-session count the test moves."""

    def __init__(self, max_cpu: float = 0.9, cores: float = 2.0) -> None:
        self.counter = ScriptedCounter(cores)
        self.live = 0
        self.budget = CpuBudget(
            max_cpu, "full", lambda: self.live, counter=self.counter, clock=lambda: self.counter.now
        )

    def run(self, seconds: float, busy_cores: float) -> None:
        """The machine keeps `busy_cores` busy for `seconds`, sampled as the server does."""
        for _ in range(round(seconds / 0.5)):
            self.counter.advance(0.5, busy_cores)
            self.budget.sample()

    def burst(self, joins: int) -> int:
        """`joins` sessions try to join at once; returns how many were admitted."""
        admitted = 0
        for _ in range(joins):
            try:
                self.budget.reserve()
            except Overloaded:
                continue
            self.live += 1
            admitted += 1
        return admitted


def test_a_burst_from_idle_is_admitted_on_the_prior_cost() -> None:
    machine = Machine()
    machine.run(3.0, busy_cores=0.12)  # the idle server
    prior = PRIOR_SESSION_CORES["full"]
    assert machine.burst(24) == int((0.9 * 2.0 - 0.12) / prior)  # 16 on a 2-core machine
    with pytest.raises(Overloaded, match="CPU budget"):
        machine.budget.reserve()
    assert machine.budget.headroom_sessions() == 0


def test_settled_sessions_replace_the_prior_with_what_they_cost() -> None:
    machine = Machine()
    machine.run(3.0, busy_cores=0.1)
    assert machine.burst(4) == 4
    # Four sessions at 0.2 cores each: twice the prior.
    machine.run(SETTLE_S + 3.0, busy_cores=0.1 + 4 * 0.2)
    assert machine.budget.session_cores() == pytest.approx(0.2, abs=1e-6)
    # 1.8 cores of budget, 0.9 busy: four more at 0.2 each, not nine at the prior.
    assert machine.budget.headroom_sessions() == 4
    assert machine.burst(10) == 4


def test_sessions_that_send_nothing_yet_still_count_at_their_cost() -> None:
    """Connected but silent sessions (the bench connects all peers before any sends) would
    look free by the CPU reading alone: the count-based projection still holds them."""
    machine = Machine()
    machine.run(3.0, busy_cores=0.12)
    assert machine.burst(10) == 10
    machine.run(SETTLE_S + 3.0, busy_cores=0.12)  # settled, but nothing is sent yet
    assert machine.budget.session_cores() == PRIOR_SESSION_CORES["full"] / 2
    assert machine.burst(30) == int((1.8 - 0.12 - 10 * 0.05) / 0.05)  # 23, not 30


def test_other_load_on_the_machine_leaves_less_room() -> None:
    machine = Machine()
    machine.run(3.0, busy_cores=1.5)  # another program keeps 1.5 cores busy
    assert machine.burst(24) == 3


def test_a_budget_of_zero_admits_everything() -> None:
    machine = Machine(max_cpu=0.0)
    machine.run(3.0, busy_cores=2.0)
    assert machine.burst(50) == 50
    assert machine.budget.headroom_sessions() == -1


def test_proc_stat_counts_only_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    counter = CpuCounter(proc_stat=stat, cgroup=tmp_path / "no-cgroup")
    cpus = sorted(counter._cpus)
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    lines = [f"cpu{cpu} 100 0 50 1000 30 5 5 0 0 0" for cpu in cpus]
    lines.append(f"cpu{max(cpus) + 1} 9999 0 9999 0 0 0 0 0 0 0")  # not ours
    stat.write_text("cpu 1 2 3 4 5 6 7 8 0 0\n" + "\n".join(lines) + "\n")
    first = counter.read()
    assert first is not None
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    assert first.busy_s == pytest.approx(len(cpus) * 160 / ticks)
    assert counter.cores == len(cpus)


def test_a_cgroup_quota_sets_the_cores_and_its_usage_the_busy_time(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    counter = CpuCounter(proc_stat=tmp_path / "absent", cgroup=tmp_path)
    assert counter.use_cgroup and counter.cores == pytest.approx(min(1.5, len(counter._cpus)))
    reading = counter.read()
    assert reading is not None and reading.busy_s == pytest.approx(2.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert not CpuCounter(proc_stat=tmp_path / "absent", cgroup=tmp_path).use_cgroup


def test_no_counters_means_no_budget(tmp_path: Path) -> None:
    counter = CpuCounter(proc_stat=tmp_path / "absent", cgroup=tmp_path / "absent")
    assert counter.read() is None


def test_the_load_of_sessions_just_ended_is_not_held_against_the_next() -> None:
    """Right after a group of interviews ends, the readings still hold their load: the next
    burst is projected by the count of live sessions, and the idle figure stays as it was."""
    machine = Machine()
    machine.run(3.0, busy_cores=0.12)
    assert machine.burst(12) == 12
    machine.run(SETTLE_S + 3.0, busy_cores=0.12 + 12 * 0.1)
    machine.live = 0  # the twelve end together
    machine.run(1.0, busy_cores=0.12)  # the window still averages their load
    assert machine.budget.busy_cores() is not None and machine.budget.busy_cores() > 0.6
    assert machine.burst(24) == int((1.8 - 0.12) / 0.1)  # 16, as from idle
    assert machine.budget._idle_cores == pytest.approx(0.12, abs=0.01)
