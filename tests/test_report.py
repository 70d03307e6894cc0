"""Perceptual metrics in records and tables, pooled FID/KID, and the report page."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.leaderboard import write_leaderboard
from bench.report import linked_files, write_report
from bench.runner import run_suite
from bench.store import load_records
from helpers import make_suite, run_cli


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory) -> Path:
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("alex") / "alexnet-owt-7be5be79.pth"
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory, alexnet):
    # The analytic attack is (near-)exact on a ReLU MLP and draws no random numbers, so every
    # undefended reconstruction is good; DLG at batch 2 fails from some initialisations.
    out = tmp_path_factory.mktemp("report")
    suite = make_suite(seeds=5, batch_size=2, datasets=[{"digits": {"size": 16}}],
                       archs=[{"mlp": {"hidden": 64, "activation": "relu"}}],
                       defenses=["none", {"noise": {"scale": 0.3}}],
                       attacks=["analytic"],
                       perceptual={"lpips_weights": str(alexnet)})
    run_suite(suite, out, jobs=0, device="cpu", progress=False)
    return out


def test_lpips_is_scored_per_cell_and_tabled(results):
    records = load_records(results)
    by = {r["defense_label"]: [] for r in records}
    for r in records:
        assert r["status"] == "ok"
        assert r["metrics"]["lpips_note"] is None
        by[r["defense_label"]].append(r["metrics"]["lpips"])
    assert max(by["none"]) < min(by["noise(scale=0.3)"])  # noisy reconstructions look worse
    assert "| LPIPS" in write_leaderboard(results).read_text()


def test_lpips_reads_na_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("LEAKBENCH_LPIPS_WEIGHTS", raising=False)
    run_suite(make_suite(attacks=[{"dlg": {"steps": 1}}]), tmp_path, jobs=0, device="cpu",
              progress=False)
    (record,) = load_records(tmp_path)
    assert record["metrics"]["lpips"] is None
    assert "LPIPS n/a" in record["metrics"]["lpips_note"]
    assert "| LPIPS" not in write_leaderboard(tmp_path).read_text()  # no column of n/a


def test_cell_pictures_are_valid_pngs_of_the_right_size(results):
    for r in load_records(results):
        with Image.open(results / r["picture"]) as im:
            im.verify()
        with Image.open(results / r["picture"]) as im:
            # 2 rows (originals, reconstructions) of batch-2 images, 16 px enlarged ×4, padding 2
            assert im.size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)


def test_report_links_point_at_files_that_exist(results):
    page = write_report(results).read_text()
    links = linked_files(page)
    assert len(links) >= 10 + 1  # every cell's picture, and the strength figure
    for link in links:
        assert (results / link).is_file(), link
    assert "## FID and KID" in page and "## Gallery" in page
    assert "LEAKBENCH_FID_WEIGHTS" in page or "torch hub" in page.lower()  # how to supply them


def test_report_pools_fid_kid_per_group_with_local_weights(results, inception_weights):
    page = write_report(results, str(inception_weights), fid_layer="64").read_text()
    section = page.split("## FID and KID")[1].split("## Gallery")[0]
    rows = [r for r in section.splitlines() if r.startswith("| digits")]
    assert len(rows) == 2  # one per (defense, attack) group
    values = {r.split("|")[2].strip(): (int(r.split("|")[4]), float(r.split("|")[5]))
              for r in rows}
    assert values["none"][0] == 10 and values["noise(scale=0.3)"][0] == 10
    assert values["none"][1] < values["noise(scale=0.3)"][1]  # near-exact vs noisy recons


def test_report_cli(results):
    out = run_cli("report", str(results))
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).name == "report.md"


def test_an_unreadable_arrays_file_is_left_out_of_fid_with_a_warning(results, tmp_path,
                                                                      capsys):
    """A Git LFS pointer or a .npz archive where a cell's arrays belong crashed `leakbench
    report` (and `site`, for the .npz) with a traceback; each is now warned about and left
    out of its group's FID/KID."""
    import shutil

    import numpy as np

    from bench.report import attack_frame, pooled_fid_kid

    copy = tmp_path / "r"
    shutil.copytree(results, copy)
    cells = sorted((r for r in load_records(copy) if r["defense_label"] == "none"),
                   key=lambda r: r["cell_id"])
    (copy / cells[0]["arrays"]).write_text("version https://git-lfs.github.com/spec/v1\n"
                                           "oid sha256:00\nsize 1\n")
    np.savez(copy / cells[1]["arrays"], a=np.zeros(3))
    (copy / (cells[1]["arrays"] + ".npz")).replace(copy / cells[1]["arrays"])
    _, df = attack_frame(copy)

    def count(originals: list, recons: list) -> dict:
        return {"n": sum(len(o) for o in originals), "fid": None, "kid": None, "reason": None}

    table = pooled_fid_kid(copy, df, measure=count).set_index("Defense")
    assert table.loc["none", "Images"] == 6 and table.loc["noise(scale=0.3)", "Images"] == 10
    err = capsys.readouterr().err
    assert f"cell {cells[0]['cell_id']}: cannot read" in err
    assert f"cell {cells[1]['cell_id']}: cannot read" in err and ".npz archive" in err
    out = run_cli("site", str(copy), "--out", str(tmp_path / "site"))
    assert out.returncode == 0, out.stderr
    assert ".npz archive" in out.stderr and "shown without it" in out.stderr


def test_committed_reports_hold_every_leaderboard_section():
    """The report left out the leaderboard's quality-versus-compute tables and figures."""
    import re

    from helpers import ROOT

    for report in sorted(ROOT.glob("results/*/report.md")):
        board = (report.parent / "leaderboard.md").read_text()
        page = report.read_text()
        sections = set(re.findall(r"^## .*$", board, re.M)) - {board.splitlines()[0]}
        assert sections <= set(re.findall(r"^## .*$", page, re.M)), report


def test_the_report_shows_the_quality_versus_compute_curves(tmp_path):
    """write_report rendered the leaderboard without its curve tables and figures."""
    import json

    from helpers import ROOT

    (tmp_path / "records").mkdir()
    kept = 0
    for path in sorted((ROOT / "results" / "defenses" / "records").glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("curve") and r["defense_label"] == "none" and kept < 4:
            (tmp_path / "records" / path.name).write_text(path.read_text())
            for rel in filter(None, (r.get("picture"), r.get("arrays"))):
                (tmp_path / rel).parent.mkdir(exist_ok=True)
                (tmp_path / rel).write_bytes((ROOT / "results" / "defenses" / rel).read_bytes())
            kept += 1
    assert kept == 4
    page = write_report(tmp_path).read_text()
    assert "## Quality versus compute" in page
    for link in linked_files(page):
        assert (tmp_path / link).is_file(), link
