"""The benchmark harness: tts-history's figures beside the seed's own design, in one run.

``python -m tts_history.bench`` (or ``tts-history-bench``) generates libraries of the sizes
asked for (cached in a work folder), loads the same data into the baseline (the seed's SQLite
``generations`` and ``profiles`` tables through SQLAlchemy), measures both, and writes a
Markdown table and a JSON file of results with the machine's description. See
``bench/results/`` in the source tree for the latest full run.

Modules: :mod:`.data` (the deterministic workload), :mod:`.build` (bulk writer of libraries
and of the baseline database), :mod:`.baseline` (the seed's design), :mod:`.workloads` (the
measurements), :mod:`.report` (Markdown and JSON), :mod:`.stats` (timing helpers).
"""
