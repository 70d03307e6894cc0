"""Papers' claims as data (``bench/suites/*.claims.yaml``) and ``leakbench check``, which tests
them against a results folder's records: :mod:`bench.claims.schema` (the file),
:mod:`bench.claims.evaluate` (verdicts), :mod:`bench.claims.render` (tables),
:mod:`bench.claims.command` (the CLI; imports nothing heavy until it runs)."""
