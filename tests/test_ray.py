"""The Ray executor on a local Ray cluster the tests start (two CPUs, no dashboard): the smoke
suite as the process executor runs it, a killed worker retried, a timeout, a killed driver."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from bench.cells.trials import members
from bench.cli import main
from bench.executors import ExecutorOptions
from bench.registry import ATTACKS, LeakbenchError
from bench.runner import run_suite
from bench.store import load_records
from bench.suite import iter_cells, load_suite
from helpers import ROOT, make_suite, write_plugin, write_suite

RAY_PLUGIN = '''
"""A test attack for the Ray executor: sleeps, after writing its worker's PID to a file."""
import os
import time
from pathlib import Path

import torch

from bench.contracts import Attack, Reconstruction
from bench.registry import Param, register_attack


@register_attack("raysleep")
class RaySleep(Attack):
    """Writes ``os.getpid()`` to ``pidfile`` (if given) and sleeps; with ``once``, a later
    attempt (the retry) finds the file, notes its own PID beside it and returns at once."""

    params = (Param("seconds", float, 600.0, low=0.0), Param("pidfile", str, ""),
              Param("once", bool, False))

    def reconstruct(self, obs):
        if self.pidfile:
            path = Path(self.pidfile)
            if self.once:  # exactly one attempt sleeps, even when two cells start at once
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    Path(self.pidfile + ".retry").write_text(str(os.getpid()))
                    return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
            else:
                path.write_text(str(os.getpid()))
        time.sleep(self.seconds)
        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))


_LONE_RUNS = [0]


@register_attack("raypass")
class RayPass(Attack):
    """Its batched pass raises, so its cells re-run alone in the task; every third lone run
    in a worker sleeps past any timeout."""

    batched_trials = frozenset({"image"})

    def reconstruct_trials(self, observations):
        raise RuntimeError("the batched pass fails")

    def reconstruct(self, obs):
        _LONE_RUNS[0] += 1
        if _LONE_RUNS[0] % 3 == 0:
            time.sleep(600)
        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))
'''


class FakeStream:
    """A Ray generator task's stream of (member, record, artifacts) items, already ready;
    ``ends``: whether it is finished once its items are read."""

    def __init__(self, items: list, ends: bool = True) -> None:
        self.refs, self.ends = items, ends

    def __next__(self):
        if not self.refs:
            raise StopIteration
        return self.refs.pop(0)

    def next_ready(self) -> bool:
        return bool(self.refs)

    def is_finished(self) -> bool:
        return self.ends and not self.refs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local two-CPU Ray cluster whose workers import leakbench and the test plugin."""
    plugin = write_plugin(tmp_path_factory.mktemp("rayplugin"), "leakbench_raytest", RAY_PLUGIN,
                          "[leakbench.attacks]\nraysleep = leakbench_raytest\n"
                          "raypass = leakbench_raytest\n")
    sys.path.insert(0, str(plugin))
    importlib.import_module("leakbench_raytest")  # the driver plans cells with it
    path = os.pathsep.join([str(ROOT), str(plugin), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    ATTACKS.unregister("raysleep")
    ATTACKS.unregister("raypass")
    sys.path.remove(str(plugin))


def _kill_when_written(pidfile: Path, killed: list[int], times: int = 1) -> threading.Thread:
    """A thread that SIGKILLs the PID written to ``pidfile`` as soon as it appears."""

    def watch() -> None:
        deadline = time.time() + 600
        while len(killed) < times and time.time() < deadline:
            if pidfile.exists() and pidfile.read_text():
                pid = int(pidfile.read_text())
                if pid not in killed:  # a retry writes its own PID (or, with once, no more)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_smoke_on_ray_gives_the_process_executors_cells_and_metrics(cluster, tmp_path):
    suite = load_suite("smoke")
    on_ray = run_suite(suite, tmp_path / "ray", device="cpu", progress=False, executor="ray")
    # one torch thread per worker in both: the Ray task holds one CPU
    run_suite(suite, tmp_path / "proc", jobs=os.cpu_count() or 1, device="cpu", progress=False,
              executor="process")
    ray_records = {r["cell_id"]: r for r in load_records(tmp_path / "ray")}
    proc_records = {r["cell_id"]: r for r in load_records(tmp_path / "proc")}
    assert set(ray_records) == set(proc_records) and on_ray.counts["ok"] == len(ray_records)
    for cid, r in ray_records.items():
        assert r["status"] == proc_records[cid]["status"] == "ok"
        assert r["metrics"] == proc_records[cid]["metrics"], cid
        assert r["provenance"]["torch_threads"] == 1
        assert (tmp_path / "ray" / r["picture"]).is_file()


def test_a_killed_worker_is_retried_and_the_cell_recorded_once(cluster, tmp_path):
    pidfile = tmp_path / "pid"
    suite = make_suite(seeds=2, timeout=300, attacks=[
        {"raysleep": {"pidfile": str(pidfile), "once": True}}, {"dlg": {"steps": 2}}])
    killed: list[int] = []
    watcher = _kill_when_written(pidfile, killed)
    summary = run_suite(suite, tmp_path / "out", device="cpu", progress=False, executor="ray",
                        executor_options=ExecutorOptions(max_retries=2))
    watcher.join(timeout=5)
    assert len(killed) == 1
    retried_in = int(Path(str(pidfile) + ".retry").read_text())
    assert retried_in != killed[0]  # the retry ran in another worker process
    records = load_records(tmp_path / "out")
    assert len(records) == 4 == sum(summary.counts.values())  # one write per cell
    assert {r["status"] for r in records} == {"ok"}


def test_a_worker_that_keeps_dying_becomes_an_error_record(cluster, tmp_path):
    pidfile = tmp_path / "pid"
    suite = make_suite(timeout=300, attacks=[{"raysleep": {"pidfile": str(pidfile)}}])
    killed: list[int] = []
    watcher = _kill_when_written(pidfile, killed, times=2)
    run_suite(suite, tmp_path / "out", device="cpu", progress=False, executor="ray",
              executor_options=ExecutorOptions(max_retries=1))
    watcher.join(timeout=5)
    assert len(killed) == 2  # the first attempt and its one retry
    (record,) = load_records(tmp_path / "out")
    assert record["status"] == "error"
    assert "Ray worker died" in record["error"] and "1 retries" in record["error"]


@pytest.mark.slow
def test_a_cell_over_its_timeout_is_cancelled_and_the_matrix_finishes(cluster, tmp_path):
    # the clock starts at submission: leave room for a fresh worker's imports
    suite = make_suite(seeds=2, timeout=30, attacks=[{"raysleep": {"seconds": 600}},
                                                    {"dlg": {"steps": 2}}])
    t0 = time.time()
    summary = run_suite(suite, tmp_path, device="cpu", progress=False, executor="ray")
    assert time.time() - t0 < 300
    by_status: dict[str, list[str]] = {}
    for r in load_records(tmp_path):
        by_status.setdefault(r["status"], []).append(r["attack"]["name"])
    assert sorted(by_status["timeout"]) == ["raysleep", "raysleep"]
    assert sorted(by_status["ok"]) == ["dlg", "dlg"]
    assert summary.counts["timeout"] == 2
    assert all("30s" in r["error"] for r in load_records(tmp_path) if r["status"] == "timeout")


@pytest.mark.slow
def test_a_hung_cell_of_a_pass_keeps_its_finished_batch_mates(cluster, tmp_path):
    # a group's task streams each cell's outcome: when its third cell hangs and the task is
    # cancelled, the two that finished keep their records (before: all three timed out)
    suite = make_suite(seeds=3, timeout=12, attacks=["raypass"])
    # two CPUs a task: the cluster runs one at a time, so the group of three is not cut
    run_suite(suite, tmp_path, device="cpu", progress=False, executor="ray", trials=8,
              executor_options=ExecutorOptions(cpus_per_task=2))
    records = sorted(load_records(tmp_path), key=lambda r: r["seed"])
    assert [r["status"] for r in records] == ["ok", "ok", "timeout"]
    ids = sorted(r["cell_id"] for r in records)
    for r in records[:2]:
        assert sorted(r["trial_batch"]["cells"]) == ids
        assert "RuntimeError: the batched pass fails" in r["trial_batch"]["fallback"]
    assert sorted(records[2]["trial_batch"]["cells"]) == ids


def _ray_run_until_a_record(cluster: str, path: Path, out_dir: Path
                            ) -> tuple[subprocess.Popen, list[str], dict[str, str]]:
    """``leakbench run`` of ``path`` on ``cluster``, one cell per task, in its own session
    (text pipes); returns once its first record is written: (process, command, env)."""
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out_dir),
           "--executor", "ray", "--ray-address", cluster, "--quiet", "--no-leaderboard",
           "--trials", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records, deadline = out_dir / "records", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if records.is_dir() and list(records.glob("*.json")):
            break
        time.sleep(0.05)
    return proc, cmd, env


@pytest.mark.slow
def test_a_killed_driver_resumes_and_records_every_cell_once(cluster, tmp_path):
    path = write_suite(tmp_path / "resume.yaml", seeds=4, attacks=[{"dlg": {"steps": 15}}])
    out_dir, records = tmp_path / "out", tmp_path / "out" / "records"
    # --trials 1: four tasks, so a kill can land between cells (batched passes are resumed
    # in tests/test_runner.py)
    proc, cmd, env = _ray_run_until_a_record(cluster, path, out_dir)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert 1 <= len(first) < 4, "the driver should have been killed partway"
    for p in records.glob("*.json"):  # every record that exists is whole
        json.loads(p.read_text())
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already done" in done.stdout
    final = sorted(records.glob("*.json"))
    assert len({json.loads(p.read_text())["cell_id"] for p in final}) == len(final) == 4
    for name, mtime in first.items():  # finished cells were not run again
        assert (records / name).stat().st_mtime_ns == mtime
    assert not list(records.glob(".*.tmp"))


@pytest.mark.slow
def test_a_sigterm_to_a_ray_run_exits_143_as_any_sigterm_does(cluster, tmp_path):
    """Ray's ``ray.wait``, where a Ray driver spends its time, re-raises whatever a signal
    handler raised inside it as a plain KeyboardInterrupt: a SIGTERM (the CLI's Terminated)
    ended a Ray run with exit 130, "interrupted", not 143, "terminated (SIGTERM)"."""
    from bench.lock import LOCK

    path = write_suite(tmp_path / "term.yaml", seeds=8, attacks=[{"dlg": {"steps": 60}}])
    out_dir, records = tmp_path / "out", tmp_path / "out" / "records"
    proc, _, _ = _ray_run_until_a_record(cluster, path, out_dir)
    os.kill(proc.pid, signal.SIGTERM)  # the driver alone, as `kill PID` sends it
    _, err = proc.communicate(timeout=120)
    assert len(list(records.glob("*.json"))) < 8, "the run had finished before the signal"
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("leakbench: terminated (SIGTERM); finished cells "
                                           "are kept, re-run to resume")
    assert not (out_dir / LOCK).exists()


def test_an_interrupt_a_library_made_of_the_sigterm_still_reads_as_sigterm():
    """The CLI's exit status follows the signal that arrived, not the exception class a
    library re-raised it as (Ray: KeyboardInterrupt)."""
    from bench.stops import Terminated, forget_sigterm, is_sigterm, note_sigterm

    forget_sigterm()
    assert not is_sigterm(KeyboardInterrupt()) and is_sigterm(Terminated())
    assert isinstance(note_sigterm(), Terminated)
    assert is_sigterm(KeyboardInterrupt())
    forget_sigterm()
    assert not is_sigterm(KeyboardInterrupt())


def test_without_ray_the_executor_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path,
                                                                        capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    path = write_suite(tmp_path / "s.yaml")
    assert main(["run", str(path), "--out", str(tmp_path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'leakbench[ray]' in err
    assert not (tmp_path / "records").exists()


def test_cluster_options_need_the_ray_executor(tmp_path, capsys):
    path = write_suite(tmp_path / "s.yaml")
    assert main(["run", str(path), "--out", str(tmp_path), "--gpus-per-task", "0.25"]) == 2
    assert "--gpus-per-task: only with --executor ray" in capsys.readouterr().err


def test_executors_import_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import bench.executors, bench.cli\n"
            "assert 'ray' in bench.executors.EXECUTORS")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr


def test_threads_alone_are_the_tasks_cpus_and_more_threads_than_cpus_are_named(capsys):
    """``--threads 4`` under Ray had kept 1 CPU per task and run 4 torch threads in each:
    a local cluster of N cores ran N tasks of 4 threads, with no warning."""
    from bench.executors.ray import RayExecutor

    alone = RayExecutor(torch.device("cpu"), 60.0, threads=4)
    assert (alone.cpus, alone.threads) == (4.0, 4) and capsys.readouterr().err == ""
    both = RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(cpus_per_task=1),
                       threads=4)
    assert (both.cpus, both.threads) == (1.0, 4)
    assert "tasks of 1 CPU(s) each run 4 torch thread(s)" in capsys.readouterr().err
    half = RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(cpus_per_task=0.5))
    assert half.threads == 1 and capsys.readouterr().err == ""  # packing, one thread: asked


def test_a_local_cluster_gets_the_cores_this_process_may_use(monkeypatch):
    """Ray counted the machine's CPUs, ignoring the affinity mask the process pool obeys."""
    from bench.executors import ray as ray_executor

    seen = {}
    ex = ray_executor.RayExecutor(torch.device("cpu"), 60.0)
    monkeypatch.setattr(ex.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ex.ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(ray_executor, "usable_cores", lambda: 1)
    ex._connect()
    assert seen["address"] == "local" and seen["num_cpus"] == 1


def test_gpu_shares_pack_cells_and_the_suite_sets_resources(monkeypatch):
    from bench.executors.ray import RayExecutor
    from bench.runner import with_resources

    suite = make_suite(resources={"gpus_per_task": 0.25})
    options = with_resources(ExecutorOptions(max_retries=1), suite.resources)
    assert options == ExecutorOptions(max_retries=1, gpus_per_task=0.25)
    assert with_resources(ExecutorOptions(gpus_per_task=0.5), suite.resources).gpus_per_task \
        == 0.5  # the flag wins
    ex = RayExecutor(torch.device("cpu"), 60.0, options=options)
    assert (ex.device, ex.gpus, ex.cpus, ex.threads) == ("cuda", 0.25, 1.0, 1)
    monkeypatch.setattr(ex.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert ex.capacity() == 4  # four cells share the one GPU
    cpu_only = RayExecutor(torch.device("cpu"), 60.0)
    monkeypatch.setattr(cpu_only.ray, "cluster_resources", lambda: {"CPU": 3.0})
    assert (cpu_only.device, cpu_only.gpus, cpu_only.capacity()) == ("cpu", 0.0, 3)


def test_passes_do_not_depend_on_the_clusters_room(monkeypatch, tmp_path):
    """Passes were cut to fill the cluster's room, so a cell's metrics changed with the
    cluster's size; they depend on the cells and --trials only."""
    from bench.executors.ray import RayExecutor

    planned: list[list[str]] = []

    def record_tasks(self, cells, options):  # what the runner hands the cluster, not run
        planned.extend([[c.seed for c in members(t)] for t in cells])
        return iter(())

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # "a cluster already joined"
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}}])
    monkeypatch.setattr(RayExecutor, "run", record_tasks)
    suite = make_suite(seeds=8, attacks=[{"dlg": {"steps": 2}}])
    run_suite(suite, tmp_path / "four", device="cpu", progress=False, executor="ray", trials=8)
    assert planned == [list(range(8))]
    planned.clear()
    run_suite(suite, tmp_path / "one", device="cpu", progress=False, executor="ray", trials=8,
              executor_options=ExecutorOptions(cpus_per_task=4))
    assert planned == [list(range(8))]


def test_a_task_no_node_can_hold_is_refused_when_the_run_joins(monkeypatch, tmp_path):
    """--cpus-per-task 4 on 2-CPU nodes, or a GPU share on a cluster without GPUs, waited
    until the cell's timeout (then, for the GPU, crashed naming the driver's missing CUDA)."""
    from bench.executors.ray import RayExecutor

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}},
                                               {"Alive": True, "Resources": {"CPU": 2.0}},
                                               {"Alive": False, "Resources": {"CPU": 8.0}}])
    for options, what in ((ExecutorOptions(cpus_per_task=4), "4 CPU(s) and 0 GPU(s)"),
                          (ExecutorOptions(gpus_per_task=0.5), "1 CPU(s) and 0.5 GPU(s)")):
        ex = RayExecutor(torch.device("cpu"), 60.0, options=options)
        with pytest.raises(LeakbenchError, match=re.escape(what)):
            ex.connect()
    with pytest.raises(LeakbenchError, match=re.escape("lower --cpus-per-task or")):
        RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(cpus_per_task=4)).connect()
    # --threads alone is a task's CPUs: the flag to lower is the one given (it named
    # --cpus-per-task, which the user had not given)
    with pytest.raises(LeakbenchError, match=re.escape("lower --threads (a task's CPUs")):
        RayExecutor(torch.device("cpu"), 60.0, threads=3).connect()
    fits = RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(cpus_per_task=2))
    fits.connect()
    assert fits.workers == 2
    fits._tasks = 1  # a run of one task: one worker, as the records' provenance says
    assert fits.workers == 1


def test_an_address_nothing_answers_on_is_one_line_at_once():
    """ray.init retried 127.0.0.1:1 for minutes; nothing listens there."""
    from bench.executors.ray import reachable

    t0 = time.perf_counter()
    with pytest.raises(LeakbenchError, match="127.0.0.1:1: nothing answers there"):
        reachable("127.0.0.1:1")
    assert time.perf_counter() - t0 < 10
    for address in ("auto", "ray://10.0.0.1:10001", "nonsense"):
        reachable(address)  # Ray's own checks


@pytest.mark.parametrize("reply,refused", [
    (b"HTTP/1.0 400 Bad request\r\n\r\n", True),  # an HTTP server: ray.init hung there
    (b"", True),  # a port that accepts and closes
    (bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]), False),  # a gRPC server's SETTINGS frame
])
def test_an_address_where_no_ray_head_answers_is_one_line(reply, refused):
    import socket
    import threading

    from bench.executors.ray import reachable

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        if refused:
            with pytest.raises(LeakbenchError, match=f"127.0.0.1:{port}: what answers there "
                                                     "is no Ray head"):
                reachable(f"127.0.0.1:{port}")
        else:
            reachable(f"127.0.0.1:{port}")
    finally:
        thread.join(10)
        server.close()


def test_a_ray_task_imports_the_components_before_its_clock_starts(monkeypatch):
    """A fresh Ray worker's first task paid every component's imports inside its clock."""
    import bench.executors.ray as ray_executor
    from bench.cells import RunOptions

    order: list[str] = []
    monkeypatch.setattr(ray_executor, "warm_up_worker", lambda device=None: order.append("imports"))
    (cell,) = iter_cells(make_suite())
    task = ray_executor._run_cell(cell.to_json(), RunOptions(), "cpu", 1)
    first = next(task)
    assert order == ["imports"] and first[0] == ray_executor.STARTED
    assert [(i, r) if i == ray_executor.STAGE else i for i, r, _ in task] == [
        (ray_executor.STAGE, "setup"), (ray_executor.STAGE, "attack"), 0]  # stages, then the cell


def test_a_cells_clock_starts_when_a_worker_takes_its_task(monkeypatch):
    """A task waiting for room on a busy cluster became a timeout record without running."""
    from bench.cells import RunOptions
    from bench.executors.ray import STARTED, RayExecutor, _Running

    ex = RayExecutor(torch.device("cpu"), 1.0)
    (cell,) = iter_cells(make_suite())

    monkeypatch.setattr(ex.ray, "get", lambda ref: ref)
    monkeypatch.setattr(ex.ray, "cancel", lambda ref, force: None)
    waiting, working = FakeStream([], ends=False), FakeStream([(STARTED, {}, {})], ends=False)
    ex._inflight = {waiting: _Running(cell, time.perf_counter() - 100.0),
                    working: _Running(cell, time.perf_counter() - 100.0)}
    assert ex._collect(working, RunOptions()) == []
    assert ex._inflight[working].begun and not ex._inflight[waiting].begun
    assert list(ex._expire(RunOptions())) == []  # neither: one waits, one just started
    ex._inflight[working].started -= 100.0
    (timed_out,) = list(ex._expire(RunOptions()))
    assert timed_out[1].record.status == "timeout" and waiting in ex._inflight
    # a task no worker ever takes (its node died) still ends, after a bounded wait
    monkeypatch.setattr("bench.executors.ray.QUEUE_WAIT_S", 50.0)
    (gave_up,) = list(ex._expire(RunOptions()))
    assert gave_up[1].record.status == "timeout" and not ex._inflight
    assert "no worker took the task within 100s" in gave_up[1].record.error


def _driver_on_fake_streams(monkeypatch) -> tuple:
    """A Ray executor (4 s timeout, one retry) whose streams are :class:`FakeStream`: its
    ``get`` raises an exception item, and each task it submits is a fresh, empty stream
    (the list returned); with the one cell it runs."""
    from bench.executors.ray import RayExecutor

    ex = RayExecutor(torch.device("cpu"), 4.0, options=ExecutorOptions(max_retries=1))
    (cell,) = iter_cells(make_suite())

    def get(ref):
        if isinstance(ref, Exception):
            raise ref
        return ref

    monkeypatch.setattr(ex.ray, "get", get)
    monkeypatch.setattr(ex.ray, "cancel", lambda ref, force: None)
    submitted: list[FakeStream] = []

    class Remote:
        def remote(self, *args):
            submitted.append(FakeStream([], ends=False))
            return submitted[-1]

    ex._remote = Remote()
    return ex, cell, submitted


def test_a_dead_worker_is_retried_by_the_driver_each_attempt_on_its_own_clock(monkeypatch):
    """Ray's own retries re-yield no first item, so a retry's wait and worker start counted
    against the cell's timeout: a cell whose worker crashed after 2.5 s of a 4 s limit was
    recorded "timeout", its crash lost, its time the limit's."""
    from bench.cells import RunOptions
    from bench.executors.ray import STARTED, _Running

    ex, cell, submitted = _driver_on_fake_streams(monkeypatch)
    first = FakeStream([(STARTED, {}, {})], ends=False)
    ex._inflight = {first: _Running(cell, time.perf_counter())}
    assert ex._collect(first, RunOptions()) == [] and ex._inflight[first].begun
    ex._inflight[first].started -= 2.5  # 2.5 s of work, then the worker dies
    first.refs.append(ray.exceptions.WorkerCrashedError())
    assert ex._collect(first, RunOptions()) == []  # no outcome: submitted again
    (retry,) = submitted
    assert list(ex._inflight) == [retry] and ex._inflight[retry].attempt == 1
    ex._inflight[retry].started -= 3.0  # its worker took 3 s to start: not the cell's time
    assert list(ex._expire(RunOptions())) == []  # 2.5 + 3 s > 4 s, but no clock ran out
    retry.refs.append((STARTED, {}, {}))
    assert ex._collect(retry, RunOptions()) == []
    ex._inflight[retry].started -= 1.0
    retry.refs.append(ray.exceptions.WorkerCrashedError())
    ((_, outcome),) = ex._collect(retry, RunOptions())  # the last retry died too: an error
    assert outcome.record.status == "error" and not ex._inflight and len(submitted) == 1
    assert "Ray worker died" in outcome.record.error and "1 retries" in outcome.record.error
    assert 3.5 <= outcome.record.timing["wall_seconds"] < 4.5  # the attempts' 2.5 + 1 s
    # an attempt already past its limit when its worker dies is a timeout, not retried
    late = FakeStream([(STARTED, {}, {})], ends=False)
    ex._inflight = {late: _Running(cell, time.perf_counter())}
    ex._collect(late, RunOptions())
    ex._inflight[late].started -= 10.0
    late.refs.append(ray.exceptions.WorkerCrashedError())
    ((_, outcome),) = ex._collect(late, RunOptions())
    assert outcome.record.status == "timeout" and len(submitted) == 1
    # a failure Ray raises as a subclass of a system one is retried too
    from bench.executors.ray import system_failure

    assert system_failure(ray.exceptions.ObjectReconstructionFailedError("x"))
    assert not system_failure(ValueError("the cell raised"))


def test_a_task_stopped_in_its_setup_says_so_on_ray_too(monkeypatch):
    """A task whose cells had not reached their attack when its clock ran out (or its worker
    died for good) measured nothing: its records say ``setup: …`` (the worker's stage marks),
    as the process executor's do; a retry starts its stages afresh."""
    from bench.cells import RunOptions
    from bench.executors.ray import STARTED, _Running
    from bench.stages import STAGE, never_attacked

    ex, cell, submitted = _driver_on_fake_streams(monkeypatch)
    for stage, prefix in (("setup", "setup: "), ("attack", "")):
        hung = FakeStream([(STARTED, {}, {}), (STAGE, stage, {})], ends=False)
        ex._inflight = {hung: _Running(cell, time.perf_counter())}
        assert ex._collect(hung, RunOptions()) == [] and ex._inflight[hung].stage == stage
        ex._inflight[hung].started -= 10.0
        ((_, outcome),) = list(ex._expire(RunOptions()))
        record = outcome.record
        assert record.status == "timeout", record.error
        assert record.error.startswith(prefix + "exceeded the cell timeout of 4s")
        assert never_attacked(record.status, record.error) == bool(prefix)
    first = FakeStream([(STARTED, {}, {}), (STAGE, "setup", {}),
                        ray.exceptions.WorkerCrashedError()], ends=False)
    ex._inflight = {first: _Running(cell, time.perf_counter())}
    assert ex._collect(first, RunOptions()) == []  # died in its setup: retried
    (retry,) = submitted
    assert ex._inflight[retry].stage is None and ex._inflight[retry].attempt == 1
    retry.refs += [(STARTED, {}, {}), (STAGE, "setup", {}), ray.exceptions.WorkerCrashedError()]
    ((_, outcome),) = ex._collect(retry, RunOptions())
    assert outcome.record.status == "error"
    assert outcome.record.error.startswith("setup: ") and "Ray worker died" in outcome.record.error


def test_a_joined_cluster_without_a_fitting_node_may_autoscale(monkeypatch, capsys):
    """A cluster that scales worker nodes up from zero has no fitting node when the run
    joins: a warning, not a refusal (the cluster the run starts itself is refused)."""
    from bench.executors.ray import RayExecutor

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {}}])
    ex = RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(address="auto"))
    ex.connect()
    assert "wait for an autoscaler" in capsys.readouterr().err


def test_a_cluster_the_run_started_is_shut_down_when_planning_fails(monkeypatch, tmp_path):
    import bench.runner as runner

    state = {"up": False, "shutdowns": 0}
    monkeypatch.setattr(ray, "is_initialized", lambda: state["up"])
    monkeypatch.setattr(ray, "init", lambda **kw: state.update(up=True))
    monkeypatch.setattr(ray, "shutdown", lambda: state.update(up=False,
                                                              shutdowns=state["shutdowns"] + 1))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}}])

    def fails(*args, **kw):
        raise RuntimeError("planning fails")

    monkeypatch.setattr(runner, "group_trials", fails)
    with pytest.raises(RuntimeError, match="planning fails"):
        run_suite(make_suite(seeds=2), tmp_path, device="cpu", progress=False, executor="ray")
    assert state == {"up": False, "shutdowns": 1}


def test_a_stream_that_ends_early_makes_its_missing_cells_error_records(monkeypatch):
    from bench.cells import RunOptions
    from bench.cells.trials import group_trials
    from bench.executors.base import failure_outcome
    from bench.executors.ray import RayExecutor, _Running

    (group,) = group_trials(iter_cells(make_suite(seeds=3, attacks=["dlg"])), 8)
    cells, options = members(group), RunOptions()
    first = failure_outcome(cells[0], "diverged", "", options, 1.0).record.to_json()
    monkeypatch.setattr(ray, "get", lambda ref: ref)  # the fake refs are their values
    ex = RayExecutor(torch.device("cpu"), 60.0)
    stream = FakeStream([(0, first, {"picture.png": b"x"})])  # its first cell, then it ends
    ex._inflight[stream] = _Running(group, time.perf_counter())
    out = ex._collect(stream, options)
    assert [c.seed for c, _ in out] == [0, 1, 2] and not ex._inflight
    assert out[0][1].record.status == "diverged" and out[0][1].artifacts == {"picture.png": b"x"}
    for _, outcome in out[1:]:
        assert outcome.record.status == "error"
        assert outcome.record.error == "the Ray task ended without this cell's outcome"
        assert outcome.record.trial_batch["cells"] == [c.cell_id for c in cells]


def test_a_suite_asking_zero_cpus_per_task_is_refused_where_it_says_so():
    """resources: {cpus_per_task: 0} passed the suite's checks and a dry run, then the run
    failed naming --cpus-per-task, a flag nobody gave."""
    with pytest.raises(LeakbenchError, match="cpus_per_task: 0.0 is below the minimum"):
        make_suite(resources={"cpus_per_task": 0})


def test_an_explicit_cpu_run_gives_no_task_a_gpu_share(monkeypatch, tmp_path, capsys):
    """A Ray task given a GPU share ran on that GPU under ``--device cpu``: the flag is
    refused (dry run too), a suite's share is dropped with a warning; under ``auto`` a head
    without a GPU still hands its tasks the suite's share (GPU workers)."""
    import bench.runner

    path = write_suite(tmp_path / "s.yaml", resources={"gpus_per_task": 0.25})
    for extra in ([], ["--dry-run"]):
        assert main(["run", str(path), "--out", str(tmp_path / "o"), "--executor", "ray",
                     "--device", "cpu", "--gpus-per-task", "0.5", *extra]) == 2
        assert "--device cpu with --gpus-per-task 0.5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    seen = {}

    class Planned(Exception):
        pass

    def fake_executor(name, device, timeout, jobs, options, threads):
        seen[name] = options
        raise Planned

    monkeypatch.setattr(bench.runner, "make_executor", fake_executor)
    suite = load_suite(path)
    for device, share in (("cpu", 0.0), ("auto", 0.25)):
        with pytest.raises(Planned):
            run_suite(suite, tmp_path / device, executor="ray", device=device, progress=False)
        assert seen["ray"].gpus_per_task == share
    assert "resources.gpus_per_task 0.25 not used: --device cpu" in capsys.readouterr().err


def test_joining_and_leaving_ray_keeps_the_clis_sigterm_handler(monkeypatch):
    """ray.init installs a SIGTERM handler that exits with status 15 (shutdown restores the
    default, which kills at once): a SIGTERM then skipped the run's stop (workers, lock,
    one line, exit 143)."""
    from bench.executors.ray import RayExecutor

    ex = RayExecutor(torch.device("cpu"), 1.0)
    monkeypatch.setattr(ex.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ex.ray, "init", lambda **kw: signal.signal(
        signal.SIGTERM, lambda *a: sys.exit(15)))
    monkeypatch.setattr(ex.ray, "shutdown", lambda: signal.signal(signal.SIGTERM,
                                                                  signal.SIG_DFL))

    def mine(*args):
        return None

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        ex._connect()
        assert signal.getsignal(signal.SIGTERM) is mine
        ex.close()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)



def test_a_sigterm_while_ray_starts_stops_the_run_as_any_sigterm_does(monkeypatch):
    """ray.init installs its handler (exit 15) at its start and returns seconds later: a
    SIGTERM in between had ended the CLI with status 15 and no line, skipping its stop; it
    is the CLI's Terminated (exit 143, one line), and the CLI's handler is back."""
    from bench.executors.ray import RayExecutor
    from bench.stops import Terminated

    ex = RayExecutor(torch.device("cpu"), 1.0)
    monkeypatch.setattr(ex.ray, "is_initialized", lambda: False)

    def init(**kw):  # Ray's handler, then the signal before init returns
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    monkeypatch.setattr(ex.ray, "init", init)

    def mine(*args):
        return None

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(Terminated):
            ex._connect()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
