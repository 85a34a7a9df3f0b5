"""Evaluation you can compare: a fixed evaluation set carved off the input before anything else, and every compared
model (tuned, base, champion) measured on the same items, per item, with paired bootstrap intervals.

evalset.py    the hash-band carve-out               measure.py  losses, greedy answers, lm-eval per item and model
harness.py    lm-evaluation-harness on a loaded model   winrate.py  pairwise judging in both orders
config.py     EvalConfig                            report.py   aggregates, deltas, intervals, the figure
stage.py      evalset_stage, evaluate_stage         (the paired bootstrap is selectune/core/bootstrap.py: compare
                                                    and experiments use it too)
"""
