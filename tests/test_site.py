"""``leakbench site``: the static site builds from every committed results folder with no broken
link, rebuilds byte-identically, renders a claims table, tolerates cells without pictures, and
works in a real headless Chromium (tables render, headers sort, images load, no 404)."""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from bench.cli import main
from bench.site import build_site
from bench.site.tables import html_table, sort_key
from helpers import ROOT

COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("*/records"))
SCENARIO = "digits(size=16)"  # the small folder: quick's cells of one scenario
CLAIMS = {"suite": "small", "rows": [
    {"claim": "dlg-noise", "paper": "Zhu et al. 2019, Fig. 8",
     "sentence": "Noise of variance 1e-4 stops the attack.", "reported": "fails",
     "measured": "16.3 ± 13.2 dB", "verdict": "does not hold", "tolerance": 2.0},
    {"claim": "idlg-labels", "paper": "Zhao et al. 2020, Tab. 1", "sentence": "100% <labels>",
     "reported": "100%", "measured": "100%", "verdict": "holds",
     "expectation": "mean label_acc ≥ 0.99 <x>"},
    {"claim": "rgap", "paper": "Zhu & Blaschko 2021", "sentence": "Closed form.",
     "reported": "", "measured": "–", "verdict": "not run"}]}


class Page(HTMLParser):
    """The links, images, ids and table structure of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.targets.append(a[key])


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


# the pages are autoescaped (a quote in an attribute or in text is an entity), so every
# attribute the templates write is name="value": a regex reads them ~10× faster than Page
_ATTR = re.compile(r'\s(href|src|id)="([^"]*)"')


def _refs(path: Path) -> tuple[list[str], set[str]]:
    """A page's href/src targets and its ids."""
    attrs = [(k, html.unescape(v)) for k, v in _ATTR.findall(path.read_text(encoding="utf-8"))]
    return [v for k, v in attrs if k != "id"], {v for k, v in attrs if k == "id"}


def broken_links(site: Path) -> list[str]:
    """Every href/src of every page that is not relative or names no file (or no id)."""
    broken = []
    refs = {page.resolve(): _refs(page) for page in sorted(site.rglob("*.html"))}
    for page, (targets, _) in refs.items():
        for target in targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith("/"):
                broken.append(f"{page}: {target} is not relative")
                continue
            path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if path not in refs and (not path.is_file() or site.resolve() not in path.parents):
                broken.append(f"{page}: {target}")
            elif parts.fragment and parts.fragment not in refs.get(path, ((), set()))[1]:
                broken.append(f"{page}: {target} (no such id)")
    return broken


def files(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def committed_site(tmp_path_factory) -> Path:
    """The site of every committed results folder, and of a small one with claims."""
    root = tmp_path_factory.mktemp("site")
    build_site([*COMMITTED, small_results(root, CLAIMS)], root / "site")
    return root / "site"


def small_results(root: Path, claims: dict | None = None) -> Path:
    """A results folder of quick's records of one dataset, one cell stripped of its arrays
    (its grid picture is shown) and one of both (as a text cell would be)."""
    src, out = ROOT / "results" / "quick", root / "small"
    (out / "records").mkdir(parents=True)
    (out / "cells").mkdir()
    kept = [r for r in (json.loads(p.read_text()) for p in
                        sorted((src / "records").glob("*.json")))
            if r["dataset_label"] == SCENARIO and r["arch_label"] == "lenet"]
    for i, r in enumerate(kept):
        for key in ("picture", "arrays"):
            if r.get(key):
                shutil.copyfile(src / r[key], out / r[key])
        if i == 0:
            r.pop("arrays")
        if i == 1:
            r.update(picture=None, arrays=None)
        (out / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r, indent=1))
    if claims is not None:
        (out / "check.json").write_text(json.dumps(claims))
    return out


def test_site_builds_from_every_committed_results_folder(committed_site):
    assert {p.name for p in COMMITTED} >= {"quick", "attacks", "defenses", "labels",
                                                  "rgap"}
    assert broken_links(committed_site) == []
    index = parse(committed_site / "index.html")
    for results in COMMITTED:
        assert f"{results.name}/index.html" in index.targets
        pages = committed_site / results.name
        cells = {p.stem for p in (results / "records").glob("*.json")}
        assert {p.stem for p in (pages / "cells").glob("*.html")} == cells
        assert {f"cells/{c}.html" for c in cells} <= set(parse(pages / "cells.html").targets)
        board = parse(pages / "index.html")
        # every leaderboard table is a table with a caption and a header row
        assert board.tags.count("table") == board.tags.count("caption") \
            == board.tags.count("thead") > 0
        assert any(t.startswith("gallery/") for t in board.targets)
        # the committed figures, redrawn from the records, are on the leaderboard page
        plots = {f"plots/{p.name}" for p in (results / "plots").glob("*.png")}
        assert plots <= set(board.targets)
    text = (committed_site / "text" / "index.html").read_text()  # sentences, not pictures
    assert text.count('<table class="sentences">') > 8 and "<mark>" in text
    images = [p for p in committed_site.rglob("*.png")]
    assert images and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in images)


def test_rebuild_gives_identical_bytes_and_tolerates_cells_without_pictures(tmp_path):
    results = small_results(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    build_site([results], first)
    assert main(["site", str(results), "--out", str(second)]) == 0
    assert files(first) == files(second)
    assert broken_links(first) == []
    build_site([results], first)  # a site built here is replaced whole
    assert files(first) == files(second)
    records = sorted((results / "records").glob("*.json"))
    grid_only, bare = (json.loads(p.read_text()) for p in records[:2])
    grid_page = (first / "small" / "cells" / f"{grid_only['cell_id']}.html").read_text()
    assert f'src="../img/{grid_only["cell_id"]}.png"' in grid_page
    bare_page = (first / "small" / "cells" / f"{bare['cell_id']}.html").read_text()
    assert "No reconstruction picture" in bare_page
    assert f'"cell_id": "{bare["cell_id"]}"' in html.unescape(bare_page)  # the record
    # enlarged pairs: originals and reconstructions, each labelled with the pair's PSNR
    shown = json.loads(records[2].read_text())
    page = (first / "small" / "cells" / f"{shown['cell_id']}.html").read_text()
    psnr = shown["metrics"]["per_image"]["psnr"][0]
    assert f"PSNR {psnr:.2f} dB" in page and "reconstruction" in page
    from PIL import Image

    with Image.open(first / "small" / "img" / f"{shown['cell_id']}_0r.png") as image:
        assert min(image.size) >= 128


TEXT_CELLS = ("7ce2e13f66656cca", "6b84dc69559423f7")  # text's tag, batch 2: best, worst
HOSTILE = '<b>x&"y</b>'  # a token as a user's corpus may hold


def test_text_cells_show_their_sentences_side_by_side_with_marks(tmp_path):
    """Two text records (one token made hostile): the leaderboard's best/worst examples, the
    cell pages and the gallery show each original beside its matched recovery in the record's
    order, the correct tokens (and only those) marked, each pair's scores; escaped, and
    rebuilt byte-identically."""
    results = tmp_path / "words"
    (results / "records").mkdir(parents=True)
    records = [json.loads((ROOT / "results" / "text" / "records" / f"{c}.json").read_text())
               for c in TEXT_CELLS]
    pair = records[0]["text_pairs"][0]
    pair["original"][0] = pair["recovered"][0] = HOSTILE
    pair["correct"][0] = True
    for r in records:
        (results / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    build_site([results], tmp_path / "a")
    build_site([results], tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert broken_links(tmp_path / "a") == []
    pages = tmp_path / "a" / "words"
    board = (pages / "index.html").read_text()
    galleries = sorted((pages / "gallery").glob("*.html"))
    assert len(galleries) == 1 and f"gallery/{galleries[0].name}" in board
    gallery = galleries[0].read_text()
    for which, r in zip(("best", "worst"), records):
        cell = (pages / "cells" / f"{r['cell_id']}.html").read_text()
        rows = re.findall(r"<tr><td class=\"num\">\d+</td>.*?</tr>", cell)
        assert len(rows) == len(r["text_pairs"])
        for row, p, token_acc in zip(rows, r["text_pairs"],
                                     r["metrics"]["per_sequence"]["token_acc"]):
            _, original, recovered, score = re.findall(r"<td[^>]*>(.*?)</td>", row)
            assert html.unescape(original) == " ".join(p["original"])
            marks = [html.unescape(m) for m in re.findall(
                r"<mark>(.*?)<span class=\"visually-hidden\"> \(correct\)</span></mark>",
                recovered)]
            assert marks == [t for t, ok in zip(p["recovered"], p["correct"]) if ok]
            assert html.unescape(re.sub(r"<mark>|<span.*?</span></mark>", "", recovered)) \
                == " ".join(p["recovered"])
            assert f"Token acc {token_acc:.3f}" in score
        for page in (board, gallery):  # the leaderboard's example and the gallery's
            assert cell[cell.index("<table class=\"sentences\">"):].split("</table>")[0] \
                .split("<tbody>")[1] in page
        assert f'<a href="cells/{r["cell_id"]}.html">none · tag(iterations=1000): {which}, ' \
               f'seed {r["seed"]}' in board
    assert HOSTILE not in board + gallery and "&lt;b&gt;x&amp;" in board
    assert "No reconstruction picture" not in gallery + board


def test_claims_table_from_check_json(committed_site):
    page = (committed_site / "small" / "claims.html").read_text()
    for row in CLAIMS["rows"]:
        for key in ("claim", "paper", "reported", "measured", "verdict"):
            text = row[key] + (f" [{row['expectation']}]" if key == "measured"
                               and "expectation" in row else "")
            assert f">{html.escape(text, quote=False)}</td>" in page
    assert "100% &lt;labels&gt;" in page  # escaped
    assert "tolerance" not in page  # extra keys are not columns
    assert ">100% [mean label_acc ≥ 0.99 &lt;x&gt;]</td>" in page  # the expectation tested
    assert "1 holds, 1 does not hold, 1 not run" in (committed_site / "index.html").read_text()
    assert 'href="claims.html"' in (committed_site / "small" / "index.html").read_text()


@pytest.mark.parametrize("problem", ["foreign-out", "bad-check", "bad-verdict", "missing-dir",
                                     "bad-suite", "symlink-out", "unwritable-out", "index.html",
                                     "style.css", "favicon.svg", ".leakbench-site", "same-name"])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, problem):
    results = small_results(tmp_path)
    out, others = tmp_path / "site", []
    if problem == "foreign-out":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif problem == "bad-suite":
        (results / "check.json").write_text(json.dumps({**CLAIMS, "suite": ["small"]}))
    elif problem == "symlink-out":  # a link to an empty folder (one --out may be)
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    elif problem == "unwritable-out":
        out = Path("/proc/nosuch/site")
    elif problem == "same-name":  # one folder on a case-insensitive disk
        others = [shutil.copytree(results, tmp_path / "other" / "SMALL")]
    elif problem == "bad-check":
        (results / "check.json").write_text("{not json")
    elif problem == "bad-verdict":
        (results / "check.json").write_text(json.dumps(
            {"suite": "s", "rows": [{**CLAIMS["rows"][0], "verdict": "maybe"}]}))
    elif problem == "missing-dir":
        results = tmp_path / "nowhere"
    else:  # a suite named like a file of the site's own would overwrite it
        results = results.rename(tmp_path / problem)
    assert main(["site", str(results), *map(str, others), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leakbench: error: ") and err.count("\n") == 1
    if problem == "foreign-out":
        assert (out / "notes.txt").read_text() == "mine"
    if problem == "symlink-out":
        assert out.is_symlink() and not any((tmp_path / "real").iterdir())


def test_bad_pictures_cost_their_cell_a_picture_not_the_build(tmp_path, capsys):
    """An unreadable arrays file or picture, one with no images: the build goes on, those
    cells have no picture. Artifacts outside the results' cells/ (absolute or ``../``) make
    a damaged record, named and left out."""
    results = small_results(tmp_path, {"suite": "small", "rows": []})
    secret = tmp_path / "secret.png"  # a readable image outside the results folder
    paths = sorted((results / "records").glob("*.json"))
    records = [json.loads(p.read_text()) for p in paths]
    shutil.copyfile(results / records[0]["picture"], secret)
    own = [f"cells/{r['cell_id']}" for r in records]  # the only artifact paths a record has
    bad = {2: {"arrays": f"{own[2]}.npy", "picture": None},
           3: {"arrays": None, "picture": f"{own[3]}.png"},
           4: {"arrays": f"{own[4]}.npy", "picture": None}}
    damaged = {5: {"arrays": None, "picture": str(secret)},
               6: {"arrays": None, "picture": "../secret.png"}}
    (results / f"{own[2]}.npy").write_bytes(b"\x93NUMPY garbage")
    (results / f"{own[3]}.png").write_bytes(secret.read_bytes()[:60])  # truncated
    np.save(results / f"{own[4]}.npy", np.zeros((2, 0, 1, 16, 16), np.uint8))
    for i, fields in {**bad, **damaged}.items():
        records[i].update(fields)
        paths[i].write_text(json.dumps(records[i]))
    assert main(["site", str(results), "--out", str(tmp_path / "site")]) == 0
    err = capsys.readouterr().err
    pages = tmp_path / "site" / "small"
    for i in bad:
        cell = records[i]["cell_id"]
        page = (pages / "cells" / f"{cell}.html").read_text()
        assert "No reconstruction picture" in page and "None" not in page, i
        assert not list((pages / "img").glob(f"{cell}*")), i  # nothing copied
        assert (f"cell {cell}" in err) == (i != 4), i  # warned, but for the empty file
    for i in damaged:
        cell = records[i]["cell_id"]
        assert (f"{cell}.json: damaged record (field 'picture' is not a file name under "
                "cells/)") in err, i
        assert not (pages / "cells" / f"{cell}.html").exists(), i
        assert not list((pages / "img").glob(f"{cell}*")), i
    assert broken_links(tmp_path / "site") == []
    claims = (pages / "claims.html").read_text()
    assert "No claims" in claims and "<table" not in claims


def test_an_arrays_file_of_many_or_huge_images_costs_a_bounded_gallery(tmp_path, capsys):
    """A 40 KB arrays file of 20 000 one-pixel pairs wrote 40 000 PNGs (171 MB): the first 64
    pairs are shown; images larger than any reconstruction here are not shown at all."""
    from bench.site.gallery import MAX_PAIRS

    results = small_results(tmp_path, {"suite": "small", "rows": []})
    paths = sorted((results / "records").glob("*.json"))
    records = [json.loads(p.read_text()) for p in paths]
    many, huge = records[0]["cell_id"], records[1]["cell_id"]
    np.save(results / "cells" / f"{many}.npy", np.zeros((2, 20000, 1, 1, 1), np.uint8))
    np.save(results / "cells" / f"{huge}.npy", np.zeros((2, 1, 1, 1, 4096), np.uint8))
    for i, cell in ((0, many), (1, huge)):
        records[i].update(arrays=f"cells/{cell}.npy")
        paths[i].write_text(json.dumps(records[i]))
    assert main(["site", str(results), "--out", str(tmp_path / "site")]) == 0
    err = capsys.readouterr().err
    img = tmp_path / "site" / "small" / "img"
    assert len(list(img.glob(f"{many}_*.png"))) == 2 * MAX_PAIRS
    assert f"cell {many}: 20000 image pairs; the first {MAX_PAIRS} are shown" in err
    assert not list(img.glob(f"{huge}_*.png")) and f"cell {huge}: cannot read" in err


def test_a_failed_build_leaves_the_old_site_as_it_was(tmp_path, capsys, monkeypatch):
    results = small_results(tmp_path)
    out = tmp_path / "site"
    build_site([results], out)
    before = files(out)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bench.site.build.write_shot", fail)
    assert main(["site", str(results), "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr("bench.site.build.write_shot", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_site([results], out)
    assert files(out) == before  # the marker included: still the old, whole site
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "small"]  # no leftovers


def test_links_are_url_encoded_and_a_skipped_only_suite_says_so(tmp_path):
    """A folder named with "#", "%" and a space (every link to it still resolves); its only
    records are skipped, so it has no attack results."""
    results = tmp_path / "a#b%c d"
    (results / "records").mkdir(parents=True)
    skipped = [p for p in sorted((ROOT / "results" / "attacks" / "records").glob("*.json"))
               if json.loads(p.read_text())["status"] == "skipped"][:2]
    for p in skipped:
        shutil.copyfile(p, results / "records" / p.name)
    build_site([results], tmp_path / "site")
    assert broken_links(tmp_path / "site") == []
    index = parse(tmp_path / "site" / "index.html")
    assert "a%23b%25c%20d/index.html" in index.targets
    board = (tmp_path / "site" / results.name / "index.html").read_text()
    assert "every attack cell was skipped" in board


def test_sort_keys_numbers_and_identifiers():
    assert [sort_key(t) for t in ["78.95 ± 8.94", "1–2", "3/5", "12,345", "50%", "43 dB",
                                  "-1e-3"]] == [78.95, 1.0, 0.6, 12345.0, 50.0, 43.0, -1e-3]
    assert [sort_key(t) for t in ["1e5a3c", "2024-01", "3x", "abc", "n/a"]] == [None] * 5
    table = html_table("t", "t", [{"Cell": "123456", "Seed": "1", "Note": ""},
                                  {"Cell": "1e5a3c", "Seed": "2", "Note": "n/a"},
                                  {"Cell": "99", "Seed": "–", "Note": "why"}])
    assert [c.numeric for c in table.columns] == [False, True, False]
    assert [r[2].blank for r in table.rows] == [True, True, False]
    assert [r[1].value for r in table.rows] == ["1.0", "2.0", None]


# ---- in a real browser: Chromium from the distribution, driven by Selenium ---------------

# --disable-dev-shm-usage: Docker's 64 MB /dev/shm is too small for the gallery pages; the
# start-up is bounded by selenium (30 s for chromedriver) and chromedriver (60 s for Chromium)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,900"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    served: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.served.append((self.path, int(code)))


@pytest.fixture(scope="module")
def server(committed_site):
    """The site over HTTP on localhost; ``served`` lists every (path, status) it answered."""
    served: list[tuple[str, int]] = []
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(committed_site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module; skipped where it is not installed, unless
    LEAKBENCH_REQUIRE_BROWSER is set (.ci/run installs it and sets it)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        binary = None
    if binary is None or driver is None:
        if os.environ.get("LEAKBENCH_REQUIRE_BROWSER"):
            pytest.fail("chromium, chromedriver or selenium is missing, and "
                        "LEAKBENCH_REQUIRE_BROWSER is set")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run does) and selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


def _open(browser, url: str) -> None:
    browser.get(url)
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], url  # no script error, no resource that failed to load
    assert browser.execute_script("return document.readyState") == "complete"


def _column(browser, table, col: int) -> list[tuple[str, str | None]]:
    return browser.execute_script(
        "return Array.from(arguments[0].tBodies[0].rows, r => [r.cells[arguments[1]]"
        ".textContent.trim(), r.cells[arguments[1]].dataset.value ?? null]);", table, col)


def _header(browser, table, text: str) -> tuple[int, object]:
    heads = table.find_elements("css selector", "thead th")
    col = [h.text.rstrip(" ↕▲▼") for h in heads].index(text)
    return col, heads[col].find_element("css selector", "button")


def test_pages_render_and_images_load_in_chromium(browser, server, committed_site):
    base, _ = server
    pages = ["index.html", *[f"{r.name}/index.html" for r in COMMITTED], "small/claims.html",
             "quick/cells.html", "labels/gallery/digits_size_16_lenet_batch_8.html",
             "small/gallery/digits_size_16_lenet_batch_1.html",
             "text/gallery/pydoc_classes_4_seq_len_12_task_classify_vocab_size_1000_"
             "transformer_heads_4_layers_2_width_128_batch_2.html",
             f"text/cells/{TEXT_CELLS[0]}.html"]
    small = sorted((committed_site / "small" / "cells").glob("*.html"))
    pages += [f"small/cells/{p.name}" for p in small[:3]]
    for page in pages:
        _open(browser, base + page)
        tables = browser.find_elements("css selector", "table")
        for table in tables:  # rendered: visible, a header row, body rows, a caption
            assert table.find_elements("css selector", "thead th")
            assert table.find_elements("css selector", "tbody tr")
            assert table.find_element("css selector", "caption").get_attribute("textContent")
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src);")
        assert broken == [], page
        if page.startswith("text/"):  # marked tokens: bold and underlined, not colour alone
            marks = browser.execute_script(
                "return Array.from(document.querySelectorAll('table.sentences mark'), m => "
                "[getComputedStyle(m).fontWeight, getComputedStyle(m).textDecorationLine, "
                "m.getBoundingClientRect().width]);")
            assert marks and all(int(w) >= 600 and "underline" in d and x > 0
                                 for w, d, x in marks), page
        elif "gallery" in page or "/cells/" in page:
            sizes = browser.execute_script(
                "return Array.from(document.querySelectorAll('.pairs img'), "
                "i => i.getBoundingClientRect().width);")
            assert sizes or "/cells/" in page, page  # a gallery shows pairs
            assert all(w >= 128 for w in sizes), page  # shown enlarged
        if page.startswith(("index", "quick/index", "small/claims")):
            assert tables and tables[0].is_displayed()


def test_clicking_a_header_sorts_its_column(browser, server):
    base, _ = server
    _open(browser, base + "attacks/cells.html")
    table = browser.find_element("css selector", "table.sortable")
    col, button = _header(browser, table, "PSNR (dB)")
    before = _column(browser, table, col)
    button.click()
    up = _column(browser, table, col)
    numbers = [float(v) for _, v in up if v is not None]
    assert numbers == sorted(numbers) and up != before
    assert sorted(map(str, numbers)) != list(map(str, numbers))  # numeric, not text order
    blanks = [t for t, v in up if v is None]
    assert blanks and all(v is None for _, v in up[-len(blanks):])  # n/a last
    assert table.find_elements("css selector", "th[aria-sort=ascending]")
    button.click()
    down = [float(v) for _, v in _column(browser, table, col) if v is not None]
    assert down == sorted(numbers, reverse=True)
    assert _column(browser, table, col)[-1][1] is None  # still last when descending
    col, button = _header(browser, table, "Status")  # lower-case words: one order everywhere
    button.click()
    texts = [t for t, _ in _column(browser, table, col)]
    assert texts == sorted(texts) and len(set(texts)) > 1
    button.click()
    assert [t for t, _ in _column(browser, table, col)] == texts[::-1]
    col, button = _header(browser, table, "Note")  # text with blanks: blanks last both ways
    for _ in range(2):
        button.click()
        notes = [t for t, _ in _column(browser, table, col)]
        n = notes.count("")
        assert 0 < n < len(notes) and notes[-n:] == [""] * n


def test_every_link_on_the_visited_pages_resolves_over_http(browser, server):
    from urllib.request import urlopen

    base, served = server
    targets: set[str] = set()
    for page in ["index.html", "quick/index.html", "quick/cells.html", "small/claims.html"]:
        _open(browser, base + page)
        targets |= set(browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href], img[src], link[href]'),"
            " e => (e.href || e.src).split('#')[0]);"))
    assert len(targets) > 200 and all(t.startswith(base) for t in targets)
    for target in sorted(targets):
        with urlopen(target) as response:
            response.read()  # the whole body: no broken pipe on the server side
            assert response.status == 200, target
    assert [p for p, code in served if code >= 400] == []


def test_claims_counts_a_claim_that_is_not_judged(tmp_path):
    """check.json's fourth verdict (a separated ordering on one seed) is read and counted."""
    from bench.site.claims import read_claims
    rows = [*CLAIMS["rows"], {**CLAIMS["rows"][0], "claim": "apart", "verdict": "not judged"}]
    (tmp_path / "check.json").write_text(json.dumps({"suite": "s", "rows": rows}))
    assert read_claims(tmp_path).counts() == "1 holds, 1 does not hold, 1 not run, 1 not judged"
