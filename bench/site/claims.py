"""A suite's claims table for the site, read from ``DIR/check.json`` (written by
``leakbench check``): the paper's sentence, the value it reports, the value measured here
(with the expectation tested, in brackets, as ``check.md`` shows it) and the verdict. Keys
other than the shown columns are ignored; a file that does not match the schema is bad input
(one line, exit status 2)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.claims.evaluate import VERDICTS
from bench.claims.render import read_check_json
from bench.registry import LeakbenchError

CHECK_FILE = "check.json"
COLUMNS = {"claim": "Claim", "paper": "Paper", "sentence": "Sentence", "reported": "Reported",
           "measured": "Measured", "verdict": "Verdict"}


@dataclass
class Claims:
    """The claims checked for one suite: its name as ``check.json`` gives it, and the rows."""

    suite: str
    rows: list[dict[str, str]]  # header → text, in the order of COLUMNS

    def counts(self) -> str:
        """e.g. "3 hold, 1 does not hold, 0 not run" (", 1 not judged" when one is)."""
        n = Counter(r["Verdict"] for r in self.rows)
        return (f"{n['holds']} hold{'s' if n['holds'] == 1 else ''}, "
                f"{n['does not hold']} do{'es' if n['does not hold'] == 1 else ''} not hold, "
                f"{n['not run']} not run"
                + (f", {n['not judged']} not judged" if n["not judged"] else ""))


def read_claims(results: Path) -> Claims | None:
    """The claims of ``results/check.json``, or None when the folder has none."""
    path = Path(results) / CHECK_FILE
    if not path.is_file():
        return None
    data = read_check_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise LeakbenchError(f"{path}: expected an object with a list of rows")
    if not isinstance(data.get("suite", ""), (str, type(None))):
        raise LeakbenchError(f"{path}: suite should be text, got {data['suite']!r}")
    rows = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise LeakbenchError(f"{path}: row {i} is not an object")
        if row.get("carried") is True:  # an earlier check's row, kept as a reference only
            continue
        missing = [k for k in COLUMNS if not isinstance(row.get(k), (str, int, float))
                   or isinstance(row.get(k), bool)]
        if missing:
            raise LeakbenchError(f"{path}: row {i} has no text for {', '.join(missing)}")
        if row["verdict"] not in VERDICTS:
            raise LeakbenchError(f"{path}: row {i}: verdict {row['verdict']!r} is not one of "
                                 + ", ".join(VERDICTS))
        shown = {header: str(row[key]) for key, header in COLUMNS.items()}
        expectation = row.get("expectation")  # what the verdict tested, as check.md shows it
        if isinstance(expectation, str) and expectation:
            shown["Measured"] += f" [{expectation}]"
        rows.append(shown)
    return Claims(str(data.get("suite") or Path(results).name), rows)
