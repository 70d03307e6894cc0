"""Resume: which of a suite's cells a results folder already holds (``done``), which to run
(``to run``: no sound record; ``--force``; ``--retry-failed`` on a failure; a timeout under a
shorter limit than the suite's now; a failure whose cell no worker began; a skipped cell the
suite no longer skips), and which the
suite skips (a skipped record whose reason changed is written again with the new one); then
one warning each for what the folder's records say beyond the suite (other cells, other
labels, another success rule or LPIPS setting, another dataset root, shorter timeouts) and,
when cells will run, for finished ones run otherwise (another device or kernels, another
leakbench commit, another CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.cells.base import cell_modality
from bench.convolutions import DEFAULT_CPU_CONV
from bench.executors.base import timed_out_under
from bench.identity import LABEL_FIELDS, component_labels
from bench.perceptual import lpips_setting, suite_lpips_setting
from bench.records import FAILURE_STATUSES
from bench.registry import warn
from bench.stages import never_began
from bench.store import read_store
from bench.suite import Suite, iter_cells
from bench.text_scoring import success_fields


class FolderPlan:
    """The suite's cells with their statuses in ``out_dir`` (iterate once, lazily: ``done``,
    ``to run`` or ``skipped: reason``); afterwards :meth:`warn_mismatch` names what the
    folder's records say beyond the suite. ``quarantine=False``: damaged records are named and
    left in place, for a dry run."""

    def __init__(self, suite: Suite, out_dir: Path, force: bool = False,
                 retry_failed: bool = False, quarantine: bool = True) -> None:
        self.suite, self.out_dir = suite, Path(out_dir)
        self.force, self.retry_failed = force, retry_failed
        kept = ("status", "skip_reason", "success_rule", *LABEL_FIELDS)  # all a plan reads
        records, self.newer = read_store(out_dir, quarantine)  # newer: left in place, unread
        self.records = {d["cell_id"]: {**{k: d.get(k) for k in kept},
                                       "settings": _settings(d), "limit": _limit(d),
                                       "root": _data_root(d), "ran_at": _ran_at(d),
                                       "plugins": _plugins(d),
                                       "lpips": lpips_setting(d.get("metrics")),
                                       "began": not never_began(d.get("error"))}
                        for d in records}
        self.kept_settings: dict[tuple[str, str], int] = {}  # of the finished cells kept
        self.kept_commits: dict[str, int] = {}  # … the leakbench commits they ran at
        self.kept_cpus: dict[str, int] = {}  # … and the CPUs they ran on
        self.replugged: list[tuple[str, str, str]] = []  # (plug-in, version then, now)
        self.planned: set[str] = set()  # of the records' ids only: memory stays flat
        self.relabelled: list[tuple[str, str]] = []  # (the record's label, the cell's now)
        self.rejudged: list[tuple[Any, Any]] = []  # (the record's success rule, the suite's)
        self.longer: list[float] = []  # the shorter timeouts of timed-out cells run again
        self.unbegun = 0  # failure records of cells no worker began, run again
        self.moved: list[tuple[Any, Any]] = []  # (the record's dataset root, the suite's)
        self.rescored: list[tuple[str, str]] = []  # (the record's LPIPS setting, the suite's)
        self.lpips = suite_lpips_setting(dict(suite.perceptual))

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        for cell in iter_cells(self.suite):
            record = self.records.get(cell.cell_id)
            if record is not None:
                self.planned.add(cell.cell_id)
            if record is not None and not self.force:  # kept: is it the cell the suite says?
                self._compare(cell, record)
                failed = self.retry_failed and record["status"] in FAILURE_STATUSES
                if _shorter(record["limit"], self.suite.timeout):
                    self.longer.append(record["limit"])  # it may finish in the time it has now
                    failed = True
                elif not record["began"]:  # no worker began it: the cell is yet to be run
                    self.unbegun += 1
                    failed = True
                if not failed and record["status"] != "skipped":  # kept, and holds a result
                    self._kept(cell, record)
                elif not failed and record["skip_reason"] != cell.skip_reason:  # judged anew:
                    # a plug-in that now takes the cell runs it; another reason is rewritten
                    yield cell, (f"skipped: {cell.skip_reason}" if cell.skip_reason
                                 else "to run")
                    continue
                yield cell, "to run" if failed else "done"
            elif cell.skip_reason:
                yield cell, f"skipped: {cell.skip_reason}"
            else:
                yield cell, "to run"

    def _kept(self, cell: Any, record: dict[str, Any]) -> None:
        """Note what a finished cell kept as done ran with: its device and kernels, and the
        folder its dataset was read from (outside the id: where the data lies)."""
        if record["settings"] is not None:
            key = record["settings"]
            self.kept_settings[key] = self.kept_settings.get(key, 0) + 1
        commit, cpu = record["ran_at"]
        if commit:
            self.kept_commits[commit] = self.kept_commits.get(commit, 0) + 1
        if cpu:
            self.kept_cpus[cpu] = self.kept_cpus.get(cpu, 0) + 1
        if record["plugins"]:  # what the cell would record now, by the same lookup
            from bench.provenance import plugin_versions

            now_versions = plugin_versions(cell)
            changed = [(name, was, now_versions[name]) for name, was in record["plugins"]
                       if name in now_versions and now_versions[name] != was]
            if changed:
                self.replugged.append(changed[0])
        before, now = record["root"], dict(cell.dataset.params).get("root")
        if before != now and _where(before) != _where(now):  # ~/data is /home/u/data
            self.moved.append((before, now))

    def _compare(self, cell: Any, record: dict[str, Any]) -> None:
        for key, label in component_labels(cell).items():
            if record.get(key) != label:  # one id, two spellings: the leaderboard splits it
                self.relabelled.append((str(record.get(key)), label))
                break
        rule = record.get("success_rule")  # outside the id: a record keeps the rule it ran by
        if rule is not None and getattr(cell, "attack", None) is not None:
            modality = cell_modality(cell)
            now = success_fields(modality, self.suite.success)["success_rule"]
            if rule != now:
                self.rejudged.append((rule, now))
        if record["lpips"] not in (None, self.lpips):  # outside the id, as the rule is
            self.rescored.append((record["lpips"], self.lpips))

    def warn_mismatch(self) -> None:
        """Warn of records that are not cells of the suite, of finished cells whose labels
        the suite now spells otherwise, and of finished cells judged by another success rule
        or scored with another LPIPS setting: the leaderboard reads every record of the
        folder, keys its rows by label and counts each record's own verdict and values, so
        each changes its tables."""
        where = f"{self.out_dir}: "
        foreign = len(self.records.keys() - self.planned)
        if foreign:
            warn(f"{where}{foreign} record(s) are not cells of suite {self.suite.name} (a "
                 "changed suite, or another suite's); its leaderboard counts them: run into "
                 "a fresh --out to leave them out")
        if self.relabelled:
            old, new = self.relabelled[0]
            warn(f"{where}{len(self.relabelled)} finished cell(s) carry other labels than "
                 f"suite {self.suite.name} now gives them (e.g. {old!r}, now {new!r}: a "
                 "parameter written at its default is shown); the leaderboard's rows split "
                 "by label: keep the suite's spelling, or run into a fresh --out")
        if self.moved:
            old, new = self.moved[0]
            warn(f"{where}{len(self.moved)} finished cell(s) read their dataset from another "
                 f"root ({old!r}, now {new!r}); a root is outside a cell's id, so they are "
                 "kept: if the folders hold other data, --force re-runs them")
        if self.longer:
            warn(f"{where}{len(self.longer)} cell(s) timed out under a shorter cell timeout "
                 f"({max(self.longer):g}s or less) than suite {self.suite.name}'s now "
                 f"({self.suite.timeout:g}s): they run again")
        if self.unbegun:
            warn(f"{where}{self.unbegun} cell(s) failed without beginning (no worker started "
                 "them): they run again")
        if self.rejudged:
            old, new = (_rule_text(r) for r in self.rejudged[0])
            warn(f"{where}{len(self.rejudged)} finished cell(s) were judged by another success "
                 f"rule ({old}) than suite {self.suite.name}'s now ({new}); the leaderboard "
                 "counts each record's own verdict: --force re-runs them")
        if self.rescored:
            old, new = (f"LPIPS {x}" for x in self.rescored[0])
            warn(f"{where}{len(self.rescored)} finished cell(s) were scored with {old}, not "
                 f"suite {self.suite.name}'s {new}; the LPIPS column averages each "
                 "record's own values: --force re-runs them")

    def warn_settings(self, device: torch.device, cpu_conv: str, cluster: bool = False) -> None:
        """Warn where the cells about to run join finished ones run on another device or with
        other CPU convolution kernels: the two round differently, and the leaderboard pools
        them under one row. Called only when cells will run."""
        now = (device.type, cpu_conv if device.type == "cpu" else "")
        other = {k: n for k, n in self.kept_settings.items() if k != now}

        def words(dev: str, conv: str) -> str:
            return dev + (f" with --cpu-conv {conv}" if conv else "")

        if other:
            ran = "; ".join(f"{n} on {words(*k)}" for k, n in sorted(other.items()))
            warn(f"{self.out_dir}: finished cells ran otherwise ({ran}) than this run's, on "
                 f"{words(*now)}, and the leaderboard pools both: --force re-runs them all, "
                 "or run into a fresh --out")
        self._warn_ran_at(device, cluster)

    def _warn_ran_at(self, device: torch.device, cluster: bool) -> None:
        """Warn where finished cells ran at a leakbench commit whose code differs from this
        run's, or (on this machine's CPU; not when a cluster runs the cells) on another CPU
        model or kernel level: the leaderboard pools them under one row, and its Environment
        lines name every commit and CPU but not which row is whose."""
        from bench.provenance import cpu_isa, cpu_model, git_commit

        now = git_commit()
        if now:
            other = {k: n for k, n in self.kept_commits.items() if not same_code(k, now)}
            if other:
                named = ", ".join(f"{n} at {short_commit(k)}" for k, n in sorted(other.items()))
                warn(f"{self.out_dir}: {sum(other.values())} finished cell(s) ran at another "
                     f"commit ({named}) than this run's ({short_commit(now)}), whose code "
                     "differs, and the leaderboard pools them: where the change alters what "
                     "they compute, --force re-runs them all, or run into a fresh --out")
        self._warn_plugins()
        if device.type != "cpu" or cluster:
            return
        here = f"{cpu_model()} ({cpu_isa()})"
        other = {k: n for k, n in self.kept_cpus.items() if k != here}
        if other:
            named = ", ".join(f"{n} on {k}" for k, n in sorted(other.items()))
            warn(f"{self.out_dir}: {sum(other.values())} finished cell(s) ran on another CPU "
                 f"({named}) than this one ({here}), whose kernels round otherwise, and the "
                 "leaderboard pools them: --force re-runs them all, or run into a fresh --out")

    def _warn_plugins(self) -> None:
        """Warn where finished cells ran with a plug-in at another version than the one
        installed now (their records' ``provenance.plugins``): leakbench's commit is the same,
        yet what the plug-in computes may not be."""
        if self.replugged:
            name, was, now = self.replugged[0]
            warn(f"{self.out_dir}: {len(self.replugged)} finished cell(s) ran with another "
                 f"version of a plug-in than the one installed now (e.g. {name} {was}, now "
                 f"{now}), and the leaderboard pools them: --force re-runs them all, or run "
                 "into a fresh --out")


def _plugins(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The (distribution, version) pairs of the plug-ins a record's cell ran
    (``provenance.plugins``), [] where it names none."""
    provenance = record.get("provenance")
    plugins = provenance.get("plugins") if isinstance(provenance, dict) else None
    if not isinstance(plugins, dict):
        return []
    return [(k, v) for k, v in plugins.items() if isinstance(k, str) and isinstance(v, str)]


def short_commit(commit: str) -> str:
    """A commit as a warning names it: 12 hex digits, ``-dirty`` kept."""
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def same_code(before: str, now: str) -> bool:
    """Whether a record's commit ran the code of this run's: the same commit, or two clean
    commits whose code paths (:data:`bench.provenance.CODE_PATHS`) do not differ (a commit
    of results or docs changes nothing a cell computes). A dirty one is the same only as
    itself; a commit this checkout does not hold is another."""
    if before == now:
        return True
    if before.endswith("-dirty") or now.endswith("-dirty"):
        return False
    from bench.provenance import code_differs

    return code_differs(before, now) is False


def _attack_provenance(record: dict[str, Any]) -> dict[str, Any] | None:
    """An attack record's provenance; None for a utility record (its training uses no attack
    kernels) or one without it."""
    provenance = record.get("provenance")
    if record.get("kind", "attack") != "attack" or not isinstance(provenance, dict):
        return None
    return provenance


def _settings(record: dict[str, Any]) -> tuple[str, str] | None:
    """(device type, CPU convolution kernels, or "" off the CPU) an attack record ran with;
    None for a utility record."""
    provenance = _attack_provenance(record)
    if provenance is None or not isinstance(provenance.get("device"), str):
        return None
    device = provenance["device"].split(":")[0]
    conv = provenance.get("cpu_conv") if device == "cpu" else ""
    return (device, conv if isinstance(conv, str) else DEFAULT_CPU_CONV)


def _ran_at(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(leakbench commit, "CPU model (kernel level)") an attack record's provenance names,
    each None where absent; (None, None) for a utility record; no CPU for one run off it."""
    provenance = _attack_provenance(record)
    if provenance is None:
        return None, None
    commit, cpu, isa = (provenance.get(k) for k in ("git_commit", "cpu_model", "cpu_isa"))
    on_cpu = str(provenance.get("device", "cpu")).startswith("cpu")
    known = isinstance(cpu, str) and cpu and isinstance(isa, str) and isa and on_cpu
    return (commit if isinstance(commit, str) and commit else None,
            f"{cpu} ({isa})" if known else None)


def _data_root(record: dict[str, Any]) -> Any:
    """The ``root`` parameter of the dataset a record's cell read (None: the default)."""
    dataset = record.get("dataset")
    params = dataset.get("params") if isinstance(dataset, dict) else None
    return params.get("root") if isinstance(params, dict) else None


def _where(root: Any) -> str | None:
    """A dataset root as the folder it names (None: the default folder)."""
    if not isinstance(root, str):
        return None
    try:
        return os.path.realpath(os.path.expanduser(root))
    except (OSError, ValueError):
        return root


def _limit(record: dict[str, Any]) -> float | None:
    """The cell timeout a timed-out record ran under (None for any other record)."""
    return timed_out_under(record.get("error")) if record.get("status") == "timeout" else None


def _shorter(limit: float | None, timeout: float) -> bool:
    """Whether a record's cell timeout is shorter than ``timeout``: by more than the
    six significant digits of the text records before 2026-12-05 kept (``:g``; they now keep
    15), so such a record's own limit is not read as a shorter one."""
    return limit is not None and limit < timeout * (1 - 1e-9) and f"{limit:g}" != f"{timeout:g}"


def _rule_text(rule: dict[str, Any]) -> str:
    """``psnr ≥ 20``: the record check has given the rule one numeric bound."""
    if rule.get("at_least") is not None:
        return f"{rule['metric']} ≥ {rule['at_least']:g}"
    return f"{rule['metric']} ≤ {rule['at_most']:g}"


def iter_plan(suite: Suite, out_dir: Path, force: bool = False, retry_failed: bool = False,
              quarantine: bool = True) -> FolderPlan:
    """Every cell with its status, lazily (a :class:`FolderPlan`)."""
    return FolderPlan(suite, out_dir, force, retry_failed, quarantine)


def plan(suite: Suite, out_dir: Path, force: bool = False, retry_failed: bool = False
         ) -> list[tuple[Any, str]]:
    """Every cell with its status, as a list (see :func:`iter_plan`)."""
    return list(iter_plan(suite, out_dir, force, retry_failed))
