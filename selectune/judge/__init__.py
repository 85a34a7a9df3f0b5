"""Stage 5, the Self-J judge (arXiv 2409.00935): a judge learns 0-9 scores without human labels.

prompts.py  the judge prompts and the expected-digit parser   labels.py  sample, self-evaluate, recalibrate by cosine
train.py    the self-distillation loss on the LoRA trainer    infer.py   scoring, best-of-n, selective answering
metrics.py  correlations, the coverage-vs-quality curve       config.py  JudgeConfig
stage.py    judge_stage -> JudgeOutputs
"""
