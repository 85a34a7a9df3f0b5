"""Stage 1, SelectIT scoring (arXiv 2402.16705): the model rates its own data.

scores.py   the pure formulas: token, sentence and model level
prompts.py  rating prompts and the official prompt layout
rater.py    rating probabilities of every (prompt, record) per rater, through the rating cache; the combination
shards.py   balanced shard plans, per-shard outputs with completion markers, the merge (Dask / Ray runs)
config.py   SelectITConfig                  stage.py  score_stage -> ScoreOutputs
"""
