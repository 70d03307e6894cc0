"""Adversarial suite files under 1 MB: the ones the limits refuse (with the words of the one-line
error) and the worst ones within the limits, which load. Shared by tests/test_suite_limits.py
and the load benchmark."""

from __future__ import annotations

import random

HEAD = "datasets: [{photos: {size: 16}}]\narchs: [lenet]\ndefenses: [none]\n"
BUDGET = 999_000  # bytes: every file stays under the 1 MB size limit


def _fill(prefix: str, item: str, suffix: str = "]\n", sep: str = ",") -> str:
    """``prefix`` + as many ``item`` as fit in BUDGET + ``suffix``."""
    n = (BUDGET - len(prefix) - len(suffix)) // (len(item) + len(sep))
    return prefix + sep.join([item] * n) + suffix


def _ints(n: int, start: int = 0) -> str:
    return ",".join(str(i) for i in range(start, start + n))


def _floats(n: int) -> str:
    """n distinct floats in (0, 1], written as labels show them."""
    return ",".join(f"{i / 1000:g}" for i in range(1, n + 1))


def _distinct_attacks(n: int) -> str:
    return ",".join(f"{{dlg: {{steps: {i}}}}}" for i in range(1, n + 1))


def _laughs(levels: int, width: int = 10) -> str:
    lines = [f"l0: &l0 [{','.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def rejected() -> dict[str, tuple[bytes, str]]:
    """name → (file, words of its one-line error)."""
    rnd = random.Random(0)
    grid = "{dlg: {steps: [" + _ints(300, 1) + "], lr: [" + _floats(300) + "]}}"
    files = {
        "attack_names_flood": (_fill(HEAD + "attacks: [", "dlg"), "attacks: a list of more"),
        "attack_entries_block": (HEAD + "attacks:\n" + "".join(
            f"- dlg: {{steps: {i}}}\n" for i in range(1, 45_000)), "more than 20000 values"),
        "distinct_attacks_and_seeds": (
            HEAD + "attacks: [" + _distinct_attacks(3_000) + "]\nseeds: [" + _ints(6_000)
            + "]\n", "more than 20000 values in the document"),
        "grid_per_entry": (HEAD + "attacks: [" + grid + "]\n",
                           "attacks[0].dlg: a grid of 90000 combinations"),
        "grid_per_axis": (HEAD + "attacks: [" + ",".join(
            ["{dlg: {steps: [" + _ints(100, 1) + "], lr: [" + _floats(90) + "]}}"] * 3)
            + "]\n", "attacks: more than 10000 values"),
        "grid_by_alias": (HEAD + "attacks: [&g " + grid + "," + ",".join(["*g"] * 9_000)
                          + "]\n", "values in the document"),
        "chain_product": ("datasets: [photos]\narchs: [lenet]\nattacks: [dlg]\ndefenses: "
                          "[{chain: [" + ",".join(["{noise: {scale: [" + _floats(30) + "]}}"] * 3)
                          + "]}]\n", "defenses[0].chain: a grid of 27000 combinations"),
        "chains_many": (
            "datasets: [photos]\narchs: [lenet]\nattacks: [dlg]\ndefenses: [" + ",".join(
                ["{chain: [{noise: {scale: [" + _floats(40) + "]}}, {prune: {ratio: [0.1, 0.2]}}]}"]
                * 200) + "]\n", "defenses: more than 10000 values"),
        "client_grid": (HEAD + "attacks: [dlg]\nclient: {local_epochs: [" + _ints(200, 1)
                        + "], lr: [" + _floats(200) + "]}\n",
                        "client[0]: a grid of 40000 combinations"),
        "seed_list": (HEAD + "attacks: [dlg]\nseeds: [" + _ints(150_000) + "]\n",
                      "seeds: a list of more than 10000 items"),
        "seed_excludes": (HEAD + "attacks: [dlg]\nseeds: [" + _ints(5_000) + "]\nexclude: ["
                          + ",".join(f"{{seed: {i}}}" for i in range(5_000, 7_000)) + "]\n",
                          "exclude: 2000 rules, above the limit of 1000"),
        "batch_sizes": (HEAD + "attacks: [dlg]\nbatch_size: [" + _ints(60_000, 1) + "]\n",
                        "batch_size: a list of more"),
        "victims": (_fill(HEAD + "attacks: [dlg]\nvictim: [", "init"), "victim: a list of more"),
        "grants": (_fill(HEAD + "attacks: [dlg]\ngrant: [", "labels"), "grant: a list of more"),
        "param_list": (HEAD + "attacks: [{dlg: {lr: [" + ",".join(
            f"{i}.5" for i in range(1, 99_000)) + "]}}]\n", "attacks[0].dlg.lr: a list of more"),
        "deep_flow": ("a: " + "[" * 499_000 + "]" * 499_000 + "\n", "nest"),
        "deep_flow_65": ("attacks: " + "[" * 65 + "]" * 65 + "\n", "nested deeper than 64"),
        "deep_mapping": ("a: " + "{a: " * 199_000 + "1" + "}" * 199_000 + "\n", "nest"),
        "deep_block": ("".join(" " * i + "a:\n" for i in range(1_400)), "nest"),
        "deep_by_alias": ("x: &x " + "[" * 40 + "]" * 40 + "\nattacks: " + "[" * 30 + "*x"
                          + "]" * 30 + "\n", "nested deeper than 64"),
        "long_description": (HEAD + "attacks: [dlg]\ndescription: '" + "x" * 990_000 + "'\n",
                             "description: a string of 990000 characters"),
        "long_name": (HEAD + "attacks: [" + "dlgx" * 240_000 + "]\n",
                      "attacks[0]: a string of 960000 characters"),
        "long_exclude_name": (HEAD + "attacks: [dlg]\nexclude: [{attack: " + "dlg" * 320_000
                              + "}]\n", "exclude[0].attack: a string of"),
        "long_integer": (HEAD + "attacks: [dlg]\nseed: " + "9" * 990_000 + "\n",
                         "seed: a string of 990000"),
        "many_top_keys": (HEAD + "attacks: [dlg]\n" + "".join(
            f"k{i}: 1\n" for i in range(100_000)), "a mapping of more than 1000 keys"),
        "many_param_keys": (HEAD + "attacks: [{dlg: {" + ",".join(
            f"k{i}: 1" for i in range(90_000)) + "}}]\n",
            "attacks[0].dlg: a mapping of more than 1000 keys"),
        "set_of_names": (HEAD + "attacks: !!set {" + ",".join(
            f"a{i}" for i in range(100_000)) + "}\n", "attacks: a mapping of more"),
        "billion_laughs": (_laughs(9, 9), "values in the document"),
        "laughs_in_a_suite": (HEAD + "attacks: [dlg]\n" + _laughs(6).replace("l", "description"),
                              "values in the document"),
        "merge_keys": ("m: &m {" + ",".join(f"k{i}: 1" for i in range(999)) + "}\nx: ["
                       + ",".join(["{<<: *m}"] * 100) + "]\n",
                       "values in the document"),
        "anchors_many": (HEAD + "attacks: [" + ",".join(f"&a{i} dlg" for i in range(80_000))
                         + "]\n", "attacks: a list of more"),
        "recursive_alias": (HEAD + "attacks: &a [dlg, *a]\n", "refers to itself"),
        "recursive_merge": ("a: &a {b: {<<: *a}}\n", "refers to itself"),
        "binary": (bytes(rnd.randrange(1, 256) for _ in range(990_000)), "not UTF-8"),
        "binary_nul": (b"attacks: [dlg]\n" + bytes(990_000), "binary"),
        "unicode_junk": ("".join(chr(rnd.randrange(32, 0x3000)) for _ in range(300_000)),
                         "invalid YAML"),
        "yaml_junk": ("".join(rnd.choice("[]{}:,-&*!?|>'\"#\n abc") for _ in range(990_000)),
                      "invalid YAML"),
        "many_documents": ("---\na: 1\n" * 100_000, "invalid YAML"),
        "timestamps": (HEAD + "attacks: [dlg]\nx: [" + ",".join(["2001-02-03"] * 90_000)
                       + "]\n", "x: a list of more"),
        "excludes_many": (HEAD + "attacks: [dlg]\nexclude: [" + ",".join(
            f"{{attack: dlg, seed: {i}}}" for i in range(1_500)) + "]\n",
            "exclude: 1500 rules, above the limit of 1000"),
    }
    return {k: (v.encode() if isinstance(v, str) else v, m) for k, (v, m) in files.items()}


def accepted() -> dict[str, str]:
    """The worst files within the limits: each loads (a dry run exits 0)."""
    grid = "{dlg: {steps: [" + _ints(100, 1) + "], lr: [" + _floats(100) + "]}}"
    return {
        # 3 900 distinct attack configurations: about 19 500 values, the most work to parse
        "distinct_attacks": HEAD + "attacks: [" + _distinct_attacks(3_900) + "]\n",
        # a grid of 10 000 attacks: 10 000 cells (the default cell limit), all expanded
        "attack_grid_cells": HEAD + "attacks: [" + grid + "]\n",
        # every axis at its limit: 10 000 values per component axis, 10 000 clients, 5 000
        # seeds, batch sizes and victims (too many cells for a run: the dry run summarises)
        "every_axis_full": (
            "datasets: [{photos: {size: [" + _ints(100, 8) + "], scale: [" + _ints(100, 214)
            + "]}}]\narchs: [{lenet: {width: [" + _ints(100, 1) + "], init_range: ["
            + _floats(100) + "]}}]\ndefenses: [{chain: [{noise: {scale: [" + _floats(100)
            + "]}}, {clip: {max_norm: [" + _floats(100) + "]}}]}]\nattacks: [" + grid + "]\n"
            "client: {local_epochs: [" + _ints(100, 1) + "], lr: [" + _floats(100) + "]}\n"
            "seeds: [" + _ints(5_000) + "]\nbatch_size: [" + _ints(5_000, 1) + "]\n"
            "victim: [" + ",".join(f"'trained:{i}'" for i in range(1, 5_001)) + "]\n"),
        # 8 000 attack cells, expanded, and 1 000 exclude rules naming one attack each
        "excludes_expanded": (
            HEAD + "attacks: [{dlg: {steps: [" + _ints(100, 1) + "], lr: [" + _floats(80)
            + "]}}]\nexclude: [" + ",".join(
                f"{{attack: 'dlg(lr={(i % 80 + 1) / 1000:g},steps={i // 80 + 1})'}}"
                for i in range(1_000)) + "]\n"),
        # 7 000 seeds and 1 000 rules naming 8 seeds each (none of the suite's)
        "seed_excludes": (
            HEAD + "attacks: [dlg]\nseeds: [" + _ints(7_000) + "]\nexclude: [" + ",".join(
                "{seed: [" + _ints(8, 7_000 + 8 * j) + "]}" for j in range(1_000)) + "]\n"),
        # a float seed against a billion seeds, and 3 900 aliases of one attack
        "aliases_and_range": (
            HEAD + "seeds: 1000000000\nexclude: [{seed: 0.5}, {seed: 7.0}]\nattacks: [&d {dlg: "
            "{steps: 2}}," + ",".join(["*d"] * 3_899) + "]\n"),
    }


WORST_REJECTED = "attack_entries_block"
WORST_ACCEPTED = "attack_grid_cells"
