"""One run per output folder, and a killed run's workers stop with it: a restart right after
``kill -9`` never overlaps with the old run, and every cell is recorded exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lock import LOCK, LockedError, RunLock, pid_alive, process_start, wait_for_workers
from bench.runner import run_suite
from helpers import ROOT, make_suite, write_suite


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_a_live_folder_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        owner = json.loads((tmp_path / LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(LockedError, match="in use by a running leakbench"):
            RunLock(tmp_path).acquire()
        with pytest.raises(LockedError):
            run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False)
        assert lock.held
    assert not (tmp_path / LOCK).exists()  # released
    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False)
    assert not (tmp_path / LOCK).exists()


def stale_lock(folder: Path, workers: list[int], starts: dict[str, int | None] | None,
               owner: int | None = None, start: int | None = None) -> None:
    info = {"pid": dead_pid() if owner is None else owner, "host": socket.gethostname(),
            "workers": workers}
    if starts is not None:
        info["worker_starts"] = starts
    if start is not None:
        info["start"] = start
    (folder / LOCK).write_text(json.dumps(info))


def take_over(folder: Path, monkeypatch) -> None:
    import bench.lock

    monkeypatch.setattr(bench.lock, "WORKER_GRACE_S", 0.5)
    with RunLock(folder):
        pass


def test_a_stale_lock_is_taken_over_after_its_workers_are_gone(tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale_lock(tmp_path, [sleeper.pid], {str(sleeper.pid): process_start(sleeper.pid)})
        take_over(tmp_path, monkeypatch)
        assert sleeper.wait(timeout=10) == -signal.SIGKILL  # killed, not waited on
        assert "stale lock" in capsys.readouterr().err
    finally:
        sleeper.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_reused_pid_is_neither_the_owner_nor_a_worker(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    """A PID recorded in a stale lock and now held by another process (its start time
    differs, or, in a lock without start times, it is not a spawned worker) is never killed;
    a lock naming this very process with another start time (a container restarted with
    the same PID) is stale, and one naming it with its own start time is live."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        start = process_start(other.pid)
        assert start is not None
        stale_lock(tmp_path, [other.pid], {str(other.pid): start - 1})
        take_over(tmp_path, monkeypatch)
        stale_lock(tmp_path, [other.pid], None)  # an older lock: no start times
        take_over(tmp_path, monkeypatch)
        assert other.poll() is None  # still running: not ours to kill
        me, my_start = os.getpid(), process_start(os.getpid())
        stale_lock(tmp_path, [], {}, owner=me, start=my_start - 1)
        take_over(tmp_path, monkeypatch)
        assert "stale lock of PID" in capsys.readouterr().err
        stale_lock(tmp_path, [], {}, owner=me, start=my_start)
        with pytest.raises(LockedError, match="in use by a running leakbench"):
            RunLock(tmp_path).acquire()
    finally:
        other.kill()


def test_another_hosts_lock_and_a_garbled_lock(tmp_path: Path, capsys) -> None:
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(LockedError, match="elsewhere"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK).write_text("{not json")
    with RunLock(tmp_path):
        pass
    assert "unreadable lock" in capsys.readouterr().err
    wait_for_workers([dead_pid()], grace=0.1)  # nothing to wait for


def test_a_folder_where_the_lock_belongs_is_refused_in_one_line(tmp_path: Path, capsys
                                                                ) -> None:
    """It warned "unreadable lock file, taken over", then failed on "Is a directory"."""
    (tmp_path / LOCK).mkdir()
    with pytest.raises(LockedError, match="is a folder where the run lock belongs"):
        RunLock(tmp_path).acquire()
    assert "taken over" not in capsys.readouterr().err
    assert (tmp_path / LOCK).is_dir()


@pytest.mark.slow
def test_a_restart_after_kill_9_never_overlaps_and_records_every_cell_once(plugin_path,
                                                                          tmp_path) -> None:
    path = write_suite(tmp_path / "slow.yaml", seeds=4, timeout=300,
                       attacks=[{"sleepy": {"seconds": 4}}])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out), "--jobs",
           "2", "--quiet", "--no-leaderboard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("records/*.json")):
        time.sleep(0.05)
    workers = json.loads((out / LOCK).read_text())["workers"]
    assert workers and any(pid_alive(w) for w in workers)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("records/*.json")}
    assert 1 <= len(first) < 4
    proc.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    proc.wait()
    restart = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    while any(pid_alive(w) for w in workers) and time.perf_counter() - killed < 30:
        time.sleep(0.01)
    latency = time.perf_counter() - killed
    assert not any(pid_alive(w) for w in workers)
    print(f"old workers gone {latency:.2f}s after kill -9")
    assert latency < 10  # generous: PDEATHSIG is immediate, the watchdog polls every 0.25 s
    stdout, stderr = restart.communicate(timeout=600)
    assert restart.returncode == 0, stderr
    assert f"{len(first)} already done" in stdout
    final = sorted(out.glob("records/*.json"))
    ids = [json.loads(p.read_text())["cell_id"] for p in final]
    assert len(final) == 4 and len(set(ids)) == 4
    for name, mtime in first.items():
        assert (out / "records" / name).stat().st_mtime_ns == mtime
    assert not list(out.glob("records/.*.tmp")) and not (out / LOCK).exists()


def _contend(out: str, results) -> None:
    from bench.lock import LockedError, RunLock

    try:
        with RunLock(Path(out)):
            results.put("held")
            time.sleep(1.0)
    except LockedError:
        results.put("refused")


def test_simultaneous_restarts_on_a_stale_lock_let_exactly_one_in(tmp_path: Path) -> None:
    import multiprocessing as mp

    # the dead run's worker lingers for a second: every restart waits for it, then all move
    # at once — the moment two of them could both take the lock over
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                             "workers": [worker.pid]}))
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    worker.wait()
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["held", "refused", "refused", "refused"]


@pytest.mark.parametrize("pid", [2 ** 70, -5, 0, "12", None, True])
def test_a_lock_naming_no_possible_pid_is_garbage(pid, tmp_path: Path, capsys) -> None:
    """``os.kill(2**70, 0)`` raised OverflowError: a traceback instead of taking over a lock
    that no process can own."""
    (tmp_path / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                             "workers": [2 ** 70, -1]}))
    with RunLock(tmp_path):
        pass
    assert "unreadable lock file, taken over" in capsys.readouterr().err
    assert not pid_alive(2 ** 70)
    wait_for_workers([2 ** 70], grace=0.1)


def test_the_run_writes_its_leaderboard_before_it_lets_go_of_the_folder(tmp_path: Path,
                                                                        monkeypatch) -> None:
    # else another run could take the folder and add or replace records while it renders
    import bench.leaderboard

    held = []
    real = bench.leaderboard.write_leaderboard

    def write(out_dir: Path, fmt: str = "markdown") -> Path:
        owner = json.loads((Path(out_dir) / LOCK).read_text())  # raises if released
        held.append(owner["pid"] == os.getpid())
        return real(out_dir, fmt)

    monkeypatch.setattr(bench.leaderboard, "write_leaderboard", write)
    summary = run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False,
                        leaderboard=True)
    assert held == [True]
    assert summary.leaderboard == tmp_path / "leaderboard.md" and summary.leaderboard.is_file()
    assert not (tmp_path / LOCK).exists()


def test_a_leaderboard_that_cannot_be_written_comes_after_the_summary(tmp_path: Path,
                                                                      capsys, monkeypatch
                                                                      ) -> None:
    # a folder with no attack records to rank: the summary line first, then one error line
    import bench.leaderboard
    from bench.cli import main
    from bench.registry import LeakbenchError

    def refuse(out_dir: Path, fmt: str = "markdown") -> Path:
        raise LeakbenchError(f"no attack records under {out_dir}/records")

    monkeypatch.setattr(bench.leaderboard, "write_leaderboard", refuse)
    suite = write_suite(tmp_path / "s.yaml")
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "0", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "1 cells" in out and "leaderboard:" not in out
    assert err.count("\n") == 1 and "no attack records" in err
    assert not (tmp_path / "out" / LOCK).exists()
