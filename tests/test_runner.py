"""Runner: records, failures as records, timeouts, resume after a kill."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.executors.process import receive
from bench.runner import run_suite
from bench.store import load_records
from helpers import ROOT, make_suite, write_suite


def test_inline_run_writes_one_record_per_cell_with_the_schema(tmp_path):
    suite = make_suite(seeds=2, batch_size=[1, 2],
                       attacks=[{"dlg": {"steps": 2}}, {"idlg": {"steps": 2}}])
    summary = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = load_records(tmp_path)
    assert len(records) == 8 and summary.counts["skipped"] == 2
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 6
    r = ok[0]
    for key in ("suite", "cell_id", "attack", "defense", "arch", "dataset", "batch_size", "seed",
                "status", "error", "metrics", "timing", "iterations", "grad_evals",
                "peak_memory_bytes", "provenance", "derived_seeds"):
        assert key in r
    assert r["timing"]["attack_seconds"] > 0 and r["timing"]["setup_seconds"] >= 0
    assert r["grad_evals"] >= r["iterations"] >= 1
    assert r["peak_memory_bytes"] > 0
    for key in ("leakbench", "git_commit", "torch", "torchmetrics", "device_name", "python",
                "platform"):
        assert key in r["provenance"]
    assert (tmp_path / r["picture"]).is_file()
    # a re-run finds every cell done
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert again.already_done == 8 and sum(again.counts.values()) == 0


@pytest.mark.slow  # 20-45 s of waiting on a timeout or a kill: the slow tier
def test_a_hung_cell_of_a_pass_keeps_its_finished_batch_mates(plugin_path, tmp_path):
    # flaky_pass's batched pass raises; its 3 cells re-run alone in the worker and the third
    # hangs: the two that finished keep their records (before: all three became timeouts,
    # the worker sent outcomes only at the task's end), each saying why it ran alone; the
    # hung one is a timeout naming its group and the task's time
    # 10 s a cell: the two that finish share the task's 30 s with the worker's start, which
    # a loaded 2-core machine can make slow
    path = write_suite(tmp_path / "pass.yaml", timeout=10, seeds=3, attacks=["flaky_pass"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(path), "--out",
                          str(tmp_path / "out"), "--jobs", "1", "--trials", "8", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    records = sorted(load_records(tmp_path / "out"), key=lambda r: r["seed"])
    assert [r["status"] for r in records] == ["ok", "ok", "timeout"]
    ids = sorted(r["cell_id"] for r in records)
    for r in records[:2]:
        assert sorted(r["trial_batch"]["cells"]) == ids
        assert "RuntimeError: the batched pass fails" in r["trial_batch"]["fallback"]
    hung = records[2]["trial_batch"]
    assert sorted(hung["cells"]) == ids and hung["task_seconds"] >= 30  # 3 cells x 10 s
    # its error gives the limit the three cells shared, lone re-runs included
    assert "cell timeout of 10s (a task of 3 cells: 30s" in records[2]["error"]


SLOW_CONSUMER = """
import sys, time
import torch
from bench.cells.base import RunOptions
from bench.cells.trials import group_trials
from bench.executors.process import ProcessExecutor
from bench.suite import attack_cells, parse_suite
import yaml
suite = parse_suite(yaml.safe_load(open(sys.argv[1])))
tasks = group_trials(list(attack_cells(suite)), 8)
executor = ProcessExecutor(torch.device("cpu"), timeout=60, jobs=1, threads=1)
for cell, outcome in executor.run(tasks, RunOptions()):
    print(cell.seed, outcome.record.status, flush=True)
    time.sleep(3)  # the runner writing a record, or other workers' events
"""


@pytest.mark.slow  # 20-45 s of waiting on a timeout or a kill: the slow tier
def test_outcomes_a_dead_worker_sent_first_are_kept(plugin_path, tmp_path):
    # the third cell kills its worker after the second's outcome was sent: while the parent
    # is busy with the first, it must not fail the second (its outcome is in the queue)
    path = write_suite(tmp_path / "dies.yaml", seeds=3, attacks=[{"flaky_pass": {"dies": True}}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    out = subprocess.run([sys.executable, "-c", SLOW_CONSUMER, str(path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    statuses = dict(line.split() for line in out.stdout.split("\n") if line.strip())
    assert statuses == {"0": "ok", "1": "ok", "2": "error"}, out.stdout


LAST_DEATH = """
import sys
import torch
from bench.cells.base import RunOptions
from bench.cells.trials import group_trials
from bench.executors.process import ProcessExecutor
from bench.suite import attack_cells, parse_suite
import yaml
suite = parse_suite(yaml.safe_load(open(sys.argv[1])))
tasks = group_trials(list(attack_cells(suite)), 8)
executor = ProcessExecutor(torch.device("cpu"), timeout=60, jobs=1, threads=1)
pids = []
executor.on_start = pids.append
for cell, outcome in executor.run(tasks, RunOptions()):
    r = outcome.record
    print(cell.seed, r.status, (r.timing or {}).get("wall_seconds"), flush=True)
print("workers", len(pids))
"""


def test_a_worker_dying_on_the_last_task_is_not_replaced_and_its_cell_keeps_its_time(
        plugin_path, tmp_path):
    """No task is left for a fresh worker (one had been started, importing torch beside the
    cells other workers were timing, and killed at the end); the dead worker's cell is timed
    from when it began (a worker dying before it began had read 0 s)."""
    path = write_suite(tmp_path / "last.yaml", seeds=3, attacks=[{"flaky_pass": {"dies": True}}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    out = subprocess.run([sys.executable, "-c", LAST_DEATH, str(path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().split("\n")
    assert lines[-1] == "workers 1", lines
    died = [line.split() for line in lines[:-1] if line.split()[1] == "error"]
    assert len(died) == 1 and float(died[0][2]) >= 1.0, lines  # it slept 1 s, then died


IDLE_DEATH = """
import os, signal, sys, time
import torch
from bench.cells.base import RunOptions
from bench.cells.trials import group_trials
from bench.executors.process import ProcessExecutor
from bench.suite import attack_cells, parse_suite
import yaml
suite = parse_suite(yaml.safe_load(open(sys.argv[1])))
tasks = group_trials(list(attack_cells(suite)), 1)  # every cell a task of its own
executor = ProcessExecutor(torch.device("cpu"), timeout=60, jobs=1, threads=1)
pids = []
executor.on_start = pids.append
for cell, outcome in executor.run(tasks, RunOptions()):
    print(cell.seed, outcome.record.status, outcome.record.error, flush=True)
    if len(pids) == 1:  # the first worker, done with its cell, dies before its next one
        time.sleep(2)
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(1)
print("workers", len(pids))
"""


def test_a_worker_that_died_between_cells_is_replaced_before_its_next_cell(tmp_path):
    # a worker killed while idle (out of memory, an operator's kill): its next cell goes to a
    # fresh worker and runs (before: into the dead worker's queue, then an error record)
    path = write_suite(tmp_path / "idle.yaml", seeds=2, attacks=[{"dlg": {"steps": 2}}])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", IDLE_DEATH, str(path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().split("\n")
    assert sorted(line.split()[:2] for line in lines[:-1]) == [["0", "ok"], ["1", "ok"]], lines
    assert lines[-1] == "workers 2"


def _send_whole_then_large(events) -> None:
    events.send(("cell", "whole"))
    events.send(("cell", "x" * 4_000_000))  # blocks past the pipe's buffer: nobody reads yet


def test_a_worker_killed_while_sending_ends_its_pipe_without_blocking_the_parent():
    # a worker killed while its outcome is half written (the parent busy elsewhere past the
    # cell's timeout): the parent reads what came whole, then the pipe's end; before, on a
    # queue the workers shared, that read waited forever for the rest of the message
    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_send_whole_then_large, args=(writer,), daemon=True)
    worker.start()
    writer.close()
    assert reader.poll(60) and reader.recv() == ("cell", "whole")
    assert reader.poll(60)  # the large message has begun to arrive
    time.sleep(0.2)
    worker.kill()
    worker.join()
    got: list = []
    reading = threading.Thread(target=lambda: got.extend(receive(reader)), daemon=True)
    reading.start()
    reading.join(30)
    assert not reading.is_alive() and got == [None]


def test_failures_become_records_and_the_matrix_goes_on(plugin_path, tmp_path):
    # the timeout covers the cell's setup too (data loading in a fresh worker): leave room
    path = write_suite(tmp_path / "fail.yaml", timeout=20,
                       attacks=["boom", "nan", {"sleepy": {"seconds": 600}}, {"dlg": {"steps": 1}},
                                "opaque"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(path), "--out",
                          str(tmp_path / "out"), "--jobs", "1", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert time.time() - t0 < 200  # the sleeper (600 s) was cut at its timeout
    by_attack = {r["attack"]["name"]: r for r in load_records(tmp_path / "out")}
    assert by_attack["boom"]["status"] == "error"
    assert "boom goes the attack" in by_attack["boom"]["error"]
    assert by_attack["nan"]["status"] == "diverged"
    assert by_attack["sleepy"]["status"] == "timeout"
    assert by_attack["dlg"]["status"] == "ok"
    # a field JSON cannot hold: that cell's error, named, where the worker ran it
    assert by_attack["opaque"]["status"] == "error"
    assert by_attack["opaque"]["error"].startswith("record.attack_info.handle is of type object")
    assert by_attack["opaque"]["timing"]["attack_seconds"] >= 0
    assert by_attack["opaque"]["floor_metrics"]["psnr"] > 0  # the seed counts at its floor
    assert by_attack["opaque"].get("attack_info") is None
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| boom" in board and "| opaque" in board  # failure rows, not a lost run
    assert "2 error" in out.stdout and "1 timeout" in out.stdout


@pytest.mark.slow  # 20-45 s of waiting on a timeout or a kill: the slow tier
def test_killed_run_resumes_and_runs_every_cell_once(tmp_path):
    path = write_suite(tmp_path / "resume.yaml", seeds=6, attacks=[{"dlg": {"steps": 15}}])
    out_dir = tmp_path / "out"
    # batched passes of 2 seeds: a kill between passes leaves whole groups recorded
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out_dir),
           "--jobs", "1", "--trials", "2", "--quiet", "--no-leaderboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    records = out_dir / "records"
    deadline = time.time() + 600  # generous: shared CI machines can be slow
    while time.time() < deadline:
        if records.is_dir() and len(list(records.glob("*.json"))) >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(200):  # wait until the workers of the killed run are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    first = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert 1 <= len(first) < 6, "the run should have been killed partway"
    for p in records.glob("*.json"):  # every record that exists is whole
        json.loads(p.read_text())
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already done" in done.stdout
    final = sorted(records.glob("*.json"))
    assert len(final) == 6
    assert len({json.loads(p.read_text())["cell_id"] for p in final}) == 6
    for name, mtime in first.items():  # finished cells were not run again
        assert (records / name).stat().st_mtime_ns == mtime
    assert not list(records.glob(".*.tmp"))


def _stopped_run(tmp_path, send) -> tuple[int, str, Path]:
    """A 40-cell run, ``send(pid)`` once its first record is written: (exit status, stderr,
    out folder). Long enough (40 cells of 100 steps) that the run is still going when the
    signal comes on any machine: at 6 short cells it had sometimes finished."""
    path = write_suite(tmp_path / "stop.yaml", seeds=40, attacks=[{"dlg": {"steps": 100}}])
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out_dir),
           "--jobs", "2", "--trials", "1", "--quiet", "--no-leaderboard"]
    # SIGINT handled as a terminal's Ctrl-C is: a test run started as a background job
    # without job control (nohup ... &) ignores SIGINT, and Python keeps an inherited ignore
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records = out_dir / "records"
    deadline = time.time() + 600
    while time.time() < deadline and not (records.is_dir() and list(records.glob("*.json"))):
        time.sleep(0.05)
    send(proc.pid)
    _, err = proc.communicate(timeout=120)
    written = list(records.glob("*.json"))
    assert len(written) < 40, "the run had finished before the signal"
    for p in written:  # what was written is whole
        json.loads(p.read_text())
    return proc.returncode, err, out_dir


def test_ctrl_c_is_one_line_from_the_parent_and_keeps_finished_cells(tmp_path):
    """Ctrl-C signals the whole process group: every worker printed a KeyboardInterrupt
    traceback before the parent's one line."""
    code, err, _ = _stopped_run(tmp_path, lambda pid: os.killpg(pid, signal.SIGINT))
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == ("leakbench: interrupted; finished cells are "
                                           "kept, re-run to resume")


def test_sigterm_to_the_run_stops_it_as_ctrl_c_does(tmp_path):
    """``kill PID`` (a job scheduler's stop) had killed the parent at once: exit -15, its
    folder's lock and its workers' semaphores left behind. It now stops the workers,
    releases the lock, keeps the finished cells and says so in one line, exit 143."""
    from bench.lock import LOCK

    # the parent alone, as `kill PID` sends it
    code, err, out_dir = _stopped_run(tmp_path, lambda pid: os.kill(pid, signal.SIGTERM))
    assert code == 143, err
    assert "Traceback" not in err and "leaked semaphore" not in err, err
    assert err.strip().splitlines()[-1] == ("leakbench: terminated (SIGTERM); finished cells "
                                           "are kept, re-run to resume")
    assert not (out_dir / LOCK).exists()  # released, not left for the next run to take over


def test_force_reruns_finished_cells(tmp_path):
    suite = make_suite()
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", force=True, progress=False)
    assert again.counts["ok"] == 1 and again.already_done == 0


def test_a_resume_names_records_the_suite_no_longer_has_and_labels_it_spells_otherwise(
        tmp_path, capsys):
    """The leaderboard reads every record of the folder and keys rows by label: a suite cut
    from 2 seeds to 1 had its leaderboard count the removed seed, and ``lr: 1.0`` written at
    its default split one attack into two rows, each without a word."""
    attack = {"dlg": {"steps": 2}}
    run_suite(make_suite(seeds=2, attacks=[attack]), tmp_path, jobs=0, device="cpu",
              progress=False)
    capsys.readouterr()
    again = run_suite(make_suite(seeds=2, attacks=[attack]), tmp_path, jobs=0, device="cpu",
                      progress=False)
    assert again.already_done == 2 and capsys.readouterr().err == ""  # a plain resume
    run_suite(make_suite(seeds=1, attacks=[attack]), tmp_path, jobs=0, device="cpu",
              progress=False)
    err = capsys.readouterr().err
    assert "1 record(s) are not cells of suite t" in err and "finished cell" not in err
    spelt = run_suite(make_suite(seeds=2, attacks=[{"dlg": {"steps": 2, "lr": 1.0}}]),
                      tmp_path, jobs=0, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert spelt.already_done == 2  # the same cells: nothing re-runs
    assert "2 finished cell(s) carry other labels" in err
    assert "'dlg(steps=2)', now 'dlg(lr=1,steps=2)'" in err and "not cells of" not in err
    stricter = run_suite(make_suite(seeds=2, attacks=[attack], success_psnr=25), tmp_path,
                         jobs=0, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert stricter.already_done == 2  # the rule is outside the id: nothing re-runs
    assert "2 finished cell(s) were judged by another success rule (psnr ≥ 20) than suite " \
           "t's now (psnr ≥ 25)" in err


def test_a_resume_under_a_longer_timeout_runs_the_cells_that_timed_out_under_a_shorter(
        tmp_path, capsys):
    """A timeout says nothing about a cell given more time: raising the suite's timeout and
    resuming had kept its timeout records as done, unless --retry-failed re-ran every
    failure."""
    from bench.executors.base import timeout_error
    from bench.resume import plan

    attack = {"dlg": {"steps": 2}}
    suite = make_suite(seeds=3, attacks=[attack])  # timeout 120 s
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    paths = sorted((tmp_path / "records").glob("*.json"))
    cells = [json.loads(p.read_text()) for p in paths]
    for path, record, limit in zip(paths, cells, (5.0, 120.0, 900.0)):
        record.update(status="timeout", metrics={},
                      error=timeout_error(type("Task", (), {})(), limit))
        path.write_text(json.dumps(record))
    capsys.readouterr()
    statuses = dict((c.cell_id, s) for c, s in plan(suite, tmp_path))
    assert [statuses[r["cell_id"]] for r in cells] == ["to run", "done", "done"]
    err = capsys.readouterr().err
    assert err == ""  # plan() warns nowhere; the run does, once
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert again.already_done == 2 and again.counts["ok"] == 1
    assert err.count("timed out under a shorter cell timeout (5s or less) than suite t's now "
                     "(120s): they run again") == 1
    by_id = {r["cell_id"]: r for r in load_records(tmp_path)}
    assert [by_id[r["cell_id"]]["status"] for r in cells] == ["ok", "timeout", "timeout"]


def test_provenance_names_no_commit_of_another_repository(tmp_path):
    """Installed as a package inside some other git checkout (a project's .venv), the commit
    recorded was that project's HEAD; it is leakbench's own checkout's, or none."""
    import shutil

    repo = tmp_path / "project"
    (repo / "site-packages").mkdir(parents=True)
    (repo / "README").write_text("another project\n")
    git = ["git", "-C", str(repo), "-c", "user.email=x@example.org", "-c", "user.name=x"]
    for args in (["init", "-q"], ["add", "README"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    shutil.copytree(ROOT / "bench", repo / "site-packages" / "bench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "from bench.provenance import git_commit; "
                          "print(git_commit())"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(repo / "site-packages")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    import bench
    from bench.provenance import git_commit

    if Path(bench.__file__).resolve().parent.parent == ROOT:  # run from the checkout itself
        mine = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        assert (git_commit() or "").removesuffix("-dirty") == mine  # this checkout's own


def test_provenance_marks_a_commit_whose_code_was_changed(tmp_path):
    """A record made from a checkout with uncommitted code names the commit it did not run
    as it is: ``<sha>-dirty``; changed results (records written into the checkout) do not."""
    import shutil

    repo = tmp_path / "leakbench"
    shutil.copytree(ROOT / "bench", repo / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}")
    git = ["git", "-C", str(repo), "-c", "user.email=x@example.org", "-c", "user.name=x"]
    for args in (["init", "-q"], ["add", "bench", "results"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()

    def commit() -> str:
        out = subprocess.run([sys.executable, "-c", "from bench.provenance import git_commit; "
                              "print(git_commit())"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    (repo / "results" / "r.json").write_text('{"changed": 1}')
    assert commit() == head
    (repo / "bench" / "notes.txt").write_text("an untracked file that is no code")
    assert commit() == head
    (repo / "bench" / "mine.py").write_text("# an untracked module the registry imports\n")
    assert commit() == f"{head}-dirty"
    (repo / "bench" / "mine.py").unlink()
    with (repo / "bench" / "registry.py").open("a") as f:
        f.write("\n# a local change\n")
    assert commit() == f"{head}-dirty"


def test_a_worker_imports_the_components_before_its_first_tasks_clock_starts(monkeypatch):
    """A fresh worker's first cell paid the imports of every component (torchvision among
    them, seconds) inside its clock: its timeout and setup time. The worker now imports them
    before it takes a task: the events it sends come after."""
    import queue

    import bench.executors.process as process
    from bench.cells import RunOptions
    from bench.suite import attack_cells

    order: list[str] = []

    class Pipe:
        def send(self, event):
            order.append(event[0])

    monkeypatch.setattr(process, "die_with_parent", lambda parent: None)
    monkeypatch.setattr(process.signal, "signal", lambda *args: None)  # the test's own SIGINT
    monkeypatch.setattr(process, "warm_up_worker", lambda device=None: order.append("imports"))
    (cell,) = attack_cells(make_suite(attacks=[{"ig": {"iterations": 1}}]))
    tasks: queue.Queue = queue.Queue()
    tasks.put((cell.to_json(), RunOptions()))
    tasks.put(None)
    process._worker(tasks, Pipe(), "cpu", 1, os.getppid())
    assert order == ["imports", "started", "stage", "stage", "cell", "done"]  # setup, attack


def test_warming_up_imports_every_registry_and_leaves_a_broken_one_to_its_cells(monkeypatch):
    from bench.executors import base
    from bench.executors.base import warm_up_worker
    from bench.registry import REGISTRIES

    monkeypatch.setattr(base, "_WARM", False)  # a fresh worker (this process may have warmed)

    loaded: list[str] = []

    def broken():
        raise ImportError("a plugin that does not import")

    for name, registry in REGISTRIES.items():
        monkeypatch.setattr(registry, "load", broken if name == "defenses" else
                            (lambda name=name: loaded.append(name)))
    warm_up_worker()  # does not raise: the cell that uses the plugin records the error
    assert sorted(loaded) == sorted(set(REGISTRIES) - {"defenses"})
    warm_up_worker()  # once per process: a Ray worker calls it at each task's start
    assert sorted(loaded) == sorted(set(REGISTRIES) - {"defenses"})


def test_warming_up_imports_what_a_cells_setup_first_scores_with():
    """A cell's setup scores the floor guess (SSIM through torchmetrics): in a fresh worker
    that first import (about 2 s) fell inside the first cell's setup time and timeout."""
    import subprocess
    import sys

    code = ("import sys; from bench.executors.base import warm_up_worker; "
            "assert 'torchmetrics' not in sys.modules; warm_up_worker(); "
            "print(sorted(m for m in ('torchmetrics', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "['torchmetrics', 'torchvision']"


def _group_of_two():
    from bench.cells.trials import group_trials
    from bench.suite import iter_cells

    tasks = group_trials(list(iter_cells(make_suite(seeds=2))), 8)
    assert len(tasks) == 1  # dlg's two seeds: one batched pass
    return tasks[0]


def test_a_member_the_task_ends_without_fails_in_the_inline_executor(monkeypatch):
    """A task that yields fewer outcomes than members (a batched attack's bug) lost the rest
    without a record; Ray's executor already made them errors."""
    from bench.executors import inline
    from bench.executors.base import ENDED_WITHOUT
    from bench.runner import run_options

    task = _group_of_two()
    real = inline.iter_task
    monkeypatch.setattr(inline, "iter_task", lambda t, d, o: (
        (i, out) for i, out in real(t, d, o) if i == 0))
    outcomes = list(inline.InlineExecutor(torch.device("cpu")).run(
        [task], run_options(make_suite(seeds=2))))
    assert [o.record.status for _, o in outcomes] == ["ok", "error"]
    assert outcomes[1][1].record.error == ENDED_WITHOUT
    assert outcomes[1][0].cell_id == task.cells[1].cell_id


def test_a_member_the_task_ends_without_fails_in_the_process_executor():
    from bench.executors.base import ENDED_WITHOUT, failure_outcome
    from bench.executors.process import ProcessExecutor, _Slot
    from bench.runner import run_options

    task = _group_of_two()
    options = run_options(make_suite(seeds=2))
    reader, writer = mp.Pipe(duplex=False)
    first = failure_outcome(task.cells[0], "ok", "", options, 0.1)
    for event in (("started", None), ("cell", (0, first.record.to_json(), {})), ("done", None)):
        writer.send(event)
    slot = _Slot(None, None, reader, cell=task, sent=time.perf_counter())
    ex = ProcessExecutor.__new__(ProcessExecutor)
    ex.device = torch.device("cpu")
    outcomes = list(ex._handle(slot, options))
    assert [c.cell_id for c, _ in outcomes] == [c.cell_id for c in task.cells]
    assert outcomes[1][1].record.status == "error"
    assert outcomes[1][1].record.error == ENDED_WITHOUT and slot.cell is None


def test_an_executor_that_does_not_say_its_workers_records_none_not_a_guess(tmp_path,
                                                                            monkeypatch):
    """The README's ``Serial`` example has no ``workers``: its records said ``workers: 2``
    (the default --jobs) for cells run one at a time (a new user's walkthrough)."""
    from bench.cells.trials import iter_task, members
    from bench.executors.base import EXECUTORS

    class Serial:
        def __init__(self, device, timeout, jobs):
            self.device = device

        def run(self, tasks, options):
            for task in tasks:
                cells = members(task)
                for i, outcome in iter_task(task, self.device, options):
                    yield cells[i], outcome

        def cancel(self):
            pass

    monkeypatch.setitem(EXECUTORS, "serial-test", Serial)
    summary = run_suite(make_suite(seeds=2, attacks=[{"dlg": {"steps": 2}}]), tmp_path,
                        jobs=2, device="cpu", progress=False, executor="serial-test")
    records = load_records(tmp_path)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert [r["provenance"]["workers"] for r in records] == [None, None]
    assert summary.parallelism == "Serial"
    inline = run_suite(make_suite(), tmp_path / "inline", jobs=0, device="cpu", progress=False)
    assert load_records(tmp_path / "inline")[0]["provenance"]["workers"] == 1
    assert inline.parallelism.startswith("1 worker")


def test_a_run_from_a_script_read_on_stdin_starts_its_workers(tmp_path):
    """``python - <<EOF`` with the process executor: spawn re-ran ``__main__`` from the file
    ``<stdin>`` in each worker, which died at once; every cell became an error record
    (a new user's walkthrough)."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
              "from helpers import make_suite\n"
              "from bench.runner import run_suite\n"
              f"run_suite(make_suite(seeds=2), {str(tmp_path)!r}, jobs=2, device='cpu', "
              "progress=False)\n"
              "assert sys.modules['__main__'].__file__ == '<stdin>'  # put back\n")
    done = subprocess.run([sys.executable, "-"], input=script, text=True, capture_output=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = load_records(tmp_path)
    assert [r["status"] for r in records] == ["ok", "ok"], [r.get("error") for r in records]
