"""Reporting on finished lm-eval runs: leaderboard tables and their inputs.

``results`` reads lm-eval's ``results_*.json`` files, ``table`` turns them into a ranked
leaderboard (with mismatched runs flagged), ``render`` writes Markdown, CSV or LaTeX, and
``paper`` holds the paper's Table 1 for reference rows. The CLI entry points live in
``dep_eval.leaderboard`` and ``dep_eval.plots``. Nothing here imports torch or lm-eval.
"""
