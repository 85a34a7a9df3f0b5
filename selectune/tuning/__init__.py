"""Stage 4, LoRA instruction tuning (peft) on the selected subset, evaluated and registered.

data.py      examples (prompt + response, labels on the response only), packing, collation
train.py     train: the shared LoRA trainer on the encoded examples      evaluate.py  base vs tuned: loss, generations
config.py    TuneConfig                                                   stage.py     tune_stage -> TuneOutputs
__main__.py  ``python -m selectune.tuning`` (torchrun / accelerate launch for several GPUs)
"""
