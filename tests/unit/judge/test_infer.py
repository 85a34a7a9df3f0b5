"""Judge scores: in range, batched equal to one at a time; declining below the threshold only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from selectune.judge.infer import decide
from tests.unit.judge.helpers import pairs_of


def test_scores_in_range_and_batched_equals_single(tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.judge.infer import load_judge, score_pairs

    jd = load_judge(tiny_model, "float32")
    pairs = pairs_of(records)
    for with_ref in (False, True):
        batched = score_pairs(jd, pairs, with_ref, batch_size=16)
        single = pd.concat([score_pairs(jd, pairs.iloc[[i]], with_ref, batch_size=1) for i in range(len(pairs))])
        assert np.allclose(batched["judge_score"], single["judge_score"], atol=1e-5)
        assert ((batched["judge_score"] >= 0) & (batched["judge_score"] <= 9)).all()
        probs = np.stack(batched["judge_probs"])
        assert np.allclose(probs.sum(1), 1.0)
        assert np.allclose(batched["judge_score"], probs @ np.arange(10))
    assert batched["judge_score"].nunique() > 1  # the random model rates different pairs differently
    # the reference column is used by default when present, and changes the prompt
    assert not np.allclose(score_pairs(jd, pairs)["judge_score"], score_pairs(jd, pairs, False)["judge_score"])


def test_decline_below_threshold_only(tiny_model: str) -> None:
    from selectune.judge.infer import answer, as_judge
    from selectune.tracking.registry import load_model

    lm = load_model(tiny_model, dtype="float32")
    first = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=0.0, max_new_tokens=6)[0]
    assert not first["declined"] and first["answer"] == first["draft"] and 0 <= first["score"] <= 9
    s = first["score"]
    above = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=s - 1e-3, max_new_tokens=6)[0]
    below = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=s + 1e-3, max_new_tokens=6)[0]
    assert not above["declined"] and above["answer"] == first["draft"]
    assert below["declined"] and "will not answer" in below["answer"] and f"{s:.2f}" in below["answer"]
    assert decide("x", 4.99, 5.0)["declined"] and not decide("x", 5.0, 5.0)["declined"]
