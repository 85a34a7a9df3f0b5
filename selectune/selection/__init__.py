"""Stage 3, subset selection: top fraction / top-k / threshold by one score or a weighted combination, random and
full baselines, response-length bounds, category quotas, a DEITA-style diversity pass, a Self-J judge's scores.

select.py     select_records: ranking, budgets, constraints, every decision with its reason
diversity.py  record embeddings (cached, chunked into a memory-mapped matrix) and the nearest-accepted search
files.py      a scored file's decision columns read in chunks; the outputs written in rank order by a bucket sort
config.py     SelectionConfig                  stage.py  select_stage -> SelectOutputs
"""
