"""SelectIT math against hand-computed values."""

import math

import numpy as np
import pytest

from selectune.selectit import prompts as rating
from selectune.selectit import scores


def test_token_score_paper_k5_by_hand() -> None:
    # P' = p / sum(p) = [.1 .2 .4 .2 .1]; argmax index 2 -> base 3;
    # sum(P'max - P'i) = .3 + .2 + 0 + .2 + .3 = 1.0; / (K-1) = .25; score = 3 * .25 = .75
    probs = np.array([0.05, 0.1, 0.2, 0.1, 0.05])  # raw probabilities, sum .5
    assert scores.token_scores(probs) == pytest.approx(0.75)


def test_token_score_official_k5_by_hand() -> None:
    # P'' = exp(P') / sum(exp(P')) with P' = [.1 .2 .4 .2 .1]
    e1, e2, e4 = math.exp(0.1), math.exp(0.2), math.exp(0.4)
    total = 2 * e1 + 2 * e2 + e4
    top = e4 / total
    spread = (2 * (top - e1 / total) + 2 * (top - e2 / total)) / 4
    expected = 3 * spread  # = 0.160394 (e^.1 = 1.105171, e^.2 = 1.221403, e^.4 = 1.491825)
    assert expected == pytest.approx(0.160394, abs=1e-6)
    got = scores.token_scores(np.array([0.05, 0.1, 0.2, 0.1, 0.05]), normalization="official")
    assert got == pytest.approx(expected, rel=1e-12)


def test_token_score_k10_by_hand() -> None:
    # P' has .6 at rating 7 and .4 at rating 2: base 7; sum(.6 - P'i) = 10 * .6 - 1 = 5; / 9; * 7
    probs = np.zeros(10)
    probs[6], probs[1] = 0.3, 0.2
    assert scores.token_scores(probs) == pytest.approx(7 * 5 / 9)
    # official: exp over ten entries: eight of exp(0), one exp(.4), one exp(.6)
    total = 8 + math.exp(0.4) + math.exp(0.6)
    pp = np.array([1, math.exp(0.4), 1, 1, 1, 1, math.exp(0.6), 1, 1, 1]) / total
    expected = 7 * (pp.max() * 10 - pp.sum()) / 9
    assert scores.token_scores(probs, "official") == pytest.approx(expected)


def test_token_scores_batched_shape_and_uniform() -> None:
    probs = np.full((3, 4, 5), 0.01)  # uniform: base 1 (first argmax), no spread
    out = scores.token_scores(probs)
    assert out.shape == (3, 4)
    assert np.all(out == 0)


def test_token_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="normalization"):
        scores.token_scores(np.ones(5), "softmax")
    with pytest.raises(ValueError, match="sum to zero"):
        scores.token_scores(np.zeros(5))
    with pytest.raises(ValueError, match="K=1"):
        scores.token_scores(np.ones(1))


def test_sentence_scores_population_std() -> None:
    # mean 2, population std sqrt(2/3) = .816497; 2 / 1.163299 = 1.719248
    out = scores.sentence_scores(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]), alpha=0.2)
    assert out[0] == pytest.approx(2 / (1 + 0.2 * math.sqrt(2 / 3)))
    assert out[0] == pytest.approx(1.719248, abs=1e-6)
    assert out[1] == pytest.approx(2.0)
    assert scores.sentence_scores(np.array([[1.0, 3.0]]), alpha=0.0)[0] == pytest.approx(2.0)


def test_model_scores_weights_normalized() -> None:
    # weights 270:135 -> 2/3, 1/3
    out = scores.model_scores([np.array([1.0, 2.0]), np.array([3.0, 4.0])], [270, 135])
    assert out == pytest.approx([1 * 2 / 3 + 3 / 3, 2 * 2 / 3 + 4 / 3])
    # scaling all weights changes nothing; the official constants 7/20, 13/20, 70/90 would not sum to one
    a = scores.model_scores(np.ones((3, 2)) * [[1], [2], [3]], [7 / 20, 13 / 20, 70 / 90])
    assert a == pytest.approx([(7 / 20 + 2 * 13 / 20 + 3 * 70 / 90) / (7 / 20 + 13 / 20 + 70 / 90)] * 2)
    with pytest.raises(ValueError, match="weights"):
        scores.model_scores([np.ones(2)], [0.0])
    with pytest.raises(ValueError, match="M weights"):
        scores.model_scores([np.ones(2), np.ones(2)], [1.0])


def test_official_prompt_layout_exact() -> None:
    expected = "Rate it.\nInstruction:Add\nResponse:4\nThe answer is: \n"
    assert rating.official_prompt("Rate it.", "Add", "", "4") == expected
    assert (rating.official_prompt("R", "Sum these", "1 2", "3")
            == "R\nInstruction:Sum these\n1 2\nResponse:3\nThe answer is: \n")
    assert rating.official_prompt("R", "Sum", "   ", "3").startswith("R\nInstruction:Sum\nResponse:")


def test_rating_prompts(tmp_path) -> None:
    prompts = rating.default_rating_prompts(5)
    assert len(prompts) >= 5 and len(set(prompts)) == len(prompts)
    assert all("5" in p and "{k}" not in p for p in prompts)
    assert all("7" in p for p in rating.default_rating_prompts(7))
    f = tmp_path / "rp.txt"
    f.write_text("first prompt\n\nsecond prompt\n")
    assert rating.load_rating_prompts(f) == ["first prompt", "second prompt"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no rating prompts"):
        rating.load_rating_prompts(tmp_path / "empty.txt")
