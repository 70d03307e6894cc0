"""Every core by default, never oversubscribed: usable cores (affinity mask, cgroup quota),
the jobs × threads plan, and records that say under what parallelism they were timed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from bench.cores import cgroup_cores, plan_parallelism, usable_cores, worker_cores
from bench.executors import make_executor
from bench.provenance import cpu_affinity, cpu_ranges
from bench.records import new_record
from bench.registry import LeakbenchError
from bench.runner import run_suite
from bench.store import load_records
from bench.suite import attack_cells
from helpers import make_suite, run_cli, write_suite


def cgroup(tmp_path, v2=None, quota=None, period=None):
    """Paths to fake cgroup files (absent where not given)."""
    paths = tmp_path / "cpu.max", (tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us")
    for path, text in ((paths[0], v2), (paths[1][0], quota), (paths[1][1], period)):
        if text is not None:
            path.write_text(text + "\n")
    return {"v2": paths[0], "v1": paths[1]}


@pytest.mark.parametrize("files, cores", [
    ({"v2": "max 100000"}, None),
    ({"v2": "200000 100000"}, 2),
    ({"v2": "150000 100000"}, 2),  # 1.5 CPUs: rounded up
    ({"v2": "50000 100000"}, 1),  # half a CPU: still one
    ({"v2": "garbage"}, None),
    ({"quota": "300000", "period": "100000"}, 3),
    ({"quota": "-1", "period": "100000"}, None),
    ({"quota": "300000"}, None),  # no period: unreadable, no limit
    ({}, None),
])
def test_cgroup_quota_is_parsed(tmp_path, files, cores):
    assert cgroup_cores(**cgroup(tmp_path, **files)) == cores


def test_cgroup_v2_wins_over_v1(tmp_path):
    assert cgroup_cores(**cgroup(tmp_path, v2="100000 100000", quota="400000",
                                 period="100000")) == 1


@pytest.mark.parametrize("own, quotas, cores", [
    ("0::/a/b\n", {"a/b": "max 100000", "a": "200000 100000"}, 2),  # a parent's binds
    ("0::/a/b\n", {"a/b": "50000 100000", "a": "400000 100000"}, 1),  # the lowest binds
    ("0::/a/b\n", {"": "300000 100000"}, 3),  # a namespaced container: the root's
    ("0::/../x\n", {"x": "100000 100000", "": "max 100000"}, None),  # outside the view
    ("0::/\n", {}, None),
])
def test_the_processs_own_cgroup_and_its_parents_bind_it(tmp_path, own, quotas, cores):
    """Only /sys/fs/cgroup/cpu.max had been read: a quota on the process's own group (a
    systemd unit's CPUQuota=, a container sharing the host's cgroup namespace) was missed,
    and a run took every core of the affinity mask (a runner review)."""
    from bench.cores import cgroup_v2_files

    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    proc.write_text("12:cpu,cpuacct:/\n" + own)
    for rel, text in quotas.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cpu.max").write_text(text + "\n")
    files = cgroup_v2_files(proc, root)
    assert files[-1] == root / "cpu.max"
    assert cgroup_cores(files, v1=(tmp_path / "q", tmp_path / "p")) == cores


def test_usable_cores_respects_the_affinity_mask_and_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    for name, v2, cores in (("none", None, 3), ("low", "200000 100000", 2),
                            ("high", "800000 100000", 3)):
        (tmp_path / name).mkdir()
        assert usable_cores(**cgroup(tmp_path / name, v2=v2)) == cores  # the lower of the two


def test_usable_cores_without_an_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores(**cgroup(tmp_path)) == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores(**cgroup(tmp_path)) == 1


def test_usable_cores_on_this_machine_is_at_least_one():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("jobs, threads, cores, plan", [
    (None, None, 8, (8, 1)),  # every core, one thread each
    (None, None, 1, (1, 1)),
    (None, 2, 8, (4, 2)),
    (None, 3, 8, (2, 3)),
    (2, None, 8, (2, 4)),
    (3, None, 8, (3, 2)),
    (0, None, 8, (0, 8)),  # inline: one cell at a time gets every core
    (2, 2, 8, (2, 2)),
])
def test_plan_parallelism(jobs, threads, cores, plan, capsys):
    assert plan_parallelism(jobs, threads, cores) == plan
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("jobs, threads, plan", [
    (4, 4, (4, 4)), (0, 3, (0, 3)),
    (None, 16, (1, 16)),  # more threads than cores: one worker, as asked
    (16, None, (16, 1)),  # more workers than cores: one thread each, as asked
])
def test_a_flag_past_the_cores_is_honoured_with_a_warning(jobs, threads, plan, capsys):
    assert plan_parallelism(jobs, threads, 2) == plan
    err = capsys.readouterr().err
    assert err.startswith("leakbench: warning: ") and "oversubscribed" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("jobs, threads, flag", [(-1, None, "--jobs"), (None, 0, "--threads"),
                                                 (2, -3, "--threads")])
def test_bad_values_are_one_line_errors(jobs, threads, flag):
    with pytest.raises(LeakbenchError, match=flag):
        plan_parallelism(jobs, threads, 4)


def test_inline_sets_threads_for_the_run_and_restores_them():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seen = []

    real = attack_cells(make_suite())[0]  # a stub cell's record must pass the record check

    class Cell:
        def run(self, device, options):
            seen.append(torch.get_num_threads())
            return SimpleNamespace(record=new_record(real, device, "skipped", "a stub"))

    executor = make_executor("inline", torch.device("cpu"), 0.0, 0, threads=want)
    list(executor.run([Cell(), Cell()], None))
    assert seen == [want, want]
    assert torch.get_num_threads() == before


def test_a_process_run_records_its_workers_and_one_thread_each(tmp_path):
    # trials=1: the two seeds run as two tasks (batched, they would share one pass and worker)
    summary = run_suite(make_suite(seeds=2), tmp_path, device="cpu", progress=False, trials=1)
    records = load_records(tmp_path)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    workers = min(usable_cores(), 2)  # the default: a worker a core (two tasks: two at most)
    for r in records:
        assert r["provenance"]["workers"] == workers
        assert r["provenance"]["torch_threads"] == 1
    assert f"{workers} worker" in summary.line() and "× 1 thread)" in summary.line()


def test_threads_flag_reaches_the_workers(tmp_path):
    out = run_cli("run", "--out", str(tmp_path), "--jobs", "1", "--threads", "2", "--quiet",
                  "--no-leaderboard", str(write_tiny(tmp_path)))
    assert out.returncode == 0, out.stderr
    (record,) = load_records(tmp_path)
    assert record["provenance"]["torch_threads"] == 2
    assert record["provenance"]["workers"] == 1


def test_cli_refuses_bad_threads(tmp_path):
    out = run_cli("run", str(write_tiny(tmp_path)), "--threads", "0", "--dry-run")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "leakbench: error: --threads: expected 1 or more torch threads, got 0"]


def write_tiny(tmp_path):
    return write_suite(tmp_path / "tiny.yaml")


def test_workers_are_pinned_only_when_they_fill_the_mask_exactly():
    assert [worker_cores(i, 2, 1, mask=[0, 1]) for i in range(2)] == [[0], [1]]
    assert [worker_cores(i, 2, 2, mask=[4, 5, 6, 7]) for i in range(2)] == [[4, 5], [6, 7]]
    assert worker_cores(0, 2, 1, mask=[0, 1, 2, 3]) is None  # fewer workers than cores
    assert worker_cores(0, 4, 1, mask=[0, 1]) is None  # more (oversubscribed on purpose)
    assert worker_cores(0, 1, 2, mask=[0, 1]) is None  # one worker: nothing to separate
    assert worker_cores(2, 2, 1, mask=[0, 1]) is None


def _can_pin() -> bool:
    try:
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, mask)  # the same mask: refused only by a sandbox
    except (AttributeError, OSError):
        return False
    return len(mask) >= 2 and len(mask) % 2 == 0 and usable_cores() == len(mask)


@pytest.mark.skipif(not _can_pin(), reason="needs an even affinity mask, no lower CPU quota, "
                    "and a system that lets a process set its affinity")
def test_two_workers_filling_the_mask_each_run_on_their_own_half(tmp_path):
    mask = sorted(os.sched_getaffinity(0))
    half = len(mask) // 2
    run_suite(make_suite(seeds=4), tmp_path, jobs=2, threads=half, device="cpu",
              progress=False, trials=1)
    seen = [r["provenance"]["cpu_affinity"] for r in load_records(tmp_path)]
    assert len(seen) == 4, seen
    assert set(seen) <= {cpu_ranges(mask[:half]), cpu_ranges(mask[half:])}, seen
    assert sorted(os.sched_getaffinity(0)) == mask  # the parent stays unpinned


@pytest.mark.skipif(not _can_pin(), reason="as above")
def test_a_run_of_fewer_cells_than_workers_is_not_pinned(tmp_path):
    mask = sorted(os.sched_getaffinity(0))  # one cell: one worker started, free to move
    run_suite(make_suite(), tmp_path, jobs=2, threads=len(mask) // 2, device="cpu",
              progress=False)
    assert [r["provenance"]["cpu_affinity"] for r in load_records(tmp_path)] == [
        cpu_ranges(mask)]


def test_cpu_affinity_reads_as_ranges(monkeypatch):
    assert cpu_ranges([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2}, raising=False)
    assert cpu_affinity() == "0,2"


@pytest.mark.parametrize("jobs, threads, tasks, warned", [
    (5, 1, 2, False),  # 2 workers start for 2 tasks: 2 threads on 2 cores
    (5, 1, 3, True), (5, 1, None, True), (0, 3, 4, True), (0, 2, 4, False),
    (5, 1, 0, False),  # nothing to run
])
def test_the_warning_counts_the_workers_that_start(jobs, threads, tasks, warned, capsys):
    """--jobs 5 on a 2-task suite warned of "5 threads on 2 usable cores"; 2 workers ran."""
    from bench.cores import warn_oversubscribed

    warn_oversubscribed(jobs, threads, 2, tasks)
    assert ("oversubscribed" in capsys.readouterr().err) is warned


def test_a_run_warns_only_where_its_workers_oversubscribe(tmp_path, monkeypatch, capsys):
    import bench.runner
    from bench.runner import run_suite
    from helpers import make_suite

    monkeypatch.setattr(bench.runner, "usable_cores", lambda: 2)
    suite = make_suite(attacks=[{"dlg": {"steps": 1}}, {"ig": {"iterations": 1}}])
    run_suite(suite, tmp_path / "a", jobs=5, threads=1, device="cpu", progress=False)
    assert "oversubscribed" not in capsys.readouterr().err  # two tasks, two workers
    run_suite(suite, tmp_path / "b", jobs=3, threads=2, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "2 workers (--jobs 3, 2 tasks) × --threads 2 = 4 threads on 2 usable cores" in err
