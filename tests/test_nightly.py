"""The nightly run: the workflow runs the commands `tox -e nightly` runs, in the same order,
and every nightly cell is a cell of a paper suite (same id: its records compare one for one
with the committed ones)."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from bench.claims.schema import load_claims
from bench.suite import load_suite
from bench.suite.expand import attack_cells

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ("paper-dlg", "paper-idlg", "paper-rgap")


def tox_commands() -> list[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    env = ini["testenv:nightly"]
    return [line.strip() for key in ("commands_pre", "commands", "commands_post")
            for line in env.get(key, "").splitlines() if line.strip()]


def workflow_commands() -> list[str]:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    return [s["run"].strip() for s in steps if str(s.get("name", "")).startswith("nightly:")]


def test_the_workflow_runs_the_tox_environment_s_commands():
    tox, workflow = tox_commands(), workflow_commands()
    assert tox == workflow
    assert [c.split()[1] for c in tox if c.startswith("leakbench")] == ["run", "check", "merge"]
    joined = "\n".join(tox)
    for step in ("leakbench diff .nightly/committed .nightly/run", "leakbench site results/*"):
        assert step in joined


def test_the_site_step_names_results_folders_only():
    """`results/*` took in results/benchmark-history.md, a file, and `site` refused it: the
    step failed every night. Every argument the step's shell expands is a results folder
    (one with records) or the nightly run's output."""
    import shlex
    import subprocess

    (step,) = [c for c in tox_commands() if "leakbench site" in c]
    inner = shlex.split(step)[-1]  # bash -c "leakbench site … --out …"
    args = subprocess.run(["bash", "-c", "echo " + inner.split("leakbench site", 1)[1]
                           .split("--out")[0]], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split()
    committed = [a for a in args if a.startswith("results")]
    assert len(committed) >= 10 and ".nightly/run" in args
    for arg in committed:
        assert (ROOT / arg / "records").is_dir(), arg


def test_the_workflow_is_scheduled_and_uploads_the_report_and_the_site():
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as true
    assert on["schedule"][0]["cron"]
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "always()"
    paths = upload[0]["with"]["path"]
    assert ".nightly/site" in paths and ".nightly/run/check.md" in paths


def test_every_nightly_cell_is_a_paper_suite_cell():
    papers = {c.cell_id for s in PAPERS for c in attack_cells(load_suite(s))}
    nightly = [c.cell_id for c in attack_cells(load_suite("nightly"))]
    assert nightly and set(nightly) <= papers
    ids = [c.id for c in load_claims("nightly").claims]
    assert ids == [c.id for s in PAPERS for c in load_claims(s).claims]


def test_each_paper_claim_reads_only_its_own_suite_s_cells():
    """In the nightly folder the three papers' cells sit together: a claim's filter must not
    reach another paper's cells (DLG on R-GAP's networks is no cell of the DLG paper's)."""
    import pandas as pd

    from bench.claims.evaluate import where_mask

    rows = []
    for suite in PAPERS:
        for c in attack_cells(load_suite(suite)):
            rows.append({"suite": suite, "seed": str(c.seed), "batch_size": str(c.batch_size),
                         "attack": c.attack.label, "attack_name": c.attack.name,
                         "defense": c.defense_label,
                         "defense_name": "+".join(d.name for d in c.defense),
                         "arch": c.arch.label, "arch_name": c.arch.name,
                         "dataset": c.dataset.label, "dataset_name": c.dataset.name})
    cells = pd.DataFrame(rows)
    for suite in PAPERS:
        for claim in load_claims(suite).claims:
            for where in (claim.where, {**claim.where, **(claim.better_than or {})}):
                hit = cells[where_mask(cells, where)]
                assert len(hit) and set(hit["suite"]) == {suite}, (claim.id, where)
