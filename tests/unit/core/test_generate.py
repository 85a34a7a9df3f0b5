"""The one generation engine: results in prompt order, a row's text independent of its batch (greedy and
seeded sampling), end-of-sequence handling and token counts."""

from __future__ import annotations

import pytest

from selectune.core.generate import generate, generate_batch, row_seed, stop_ids
from selectune.core.models import load_causal_lm
from selectune.core.prompts import prompt_ids


@pytest.fixture(scope="module")
def lm(tiny_model: str):
    return load_causal_lm(tiny_model, "float32")


@pytest.fixture(scope="module")
def prompts(lm) -> list[list[int]]:
    _, tok = lm
    texts = ["What is the capital of France?", "Add two and three.", "Write a python function.", "List",
             "Explain what a function is in code, with an example and a list of points."]
    return [prompt_ids("alpaca", tok, t) for t in texts]


def test_greedy_batched_equals_one_at_a_time(lm, prompts) -> None:
    model, tok = lm
    batched = generate(model, tok, prompts, 8, batch_size=3)
    alone = [generate(model, tok, [p], 8)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(0 < g.n_tokens <= 8 for g in batched)


def test_sampling_depends_on_the_seed_not_the_batch(lm, prompts) -> None:
    model, tok = lm
    seeds = [row_seed(0, f"r{i}", 0) for i in range(len(prompts))]
    together = generate(model, tok, prompts, 10, batch_size=5, temperature=1.0, top_p=0.95, seeds=seeds)
    reversed_ = generate(model, tok, prompts[::-1], 10, batch_size=2, temperature=1.0, top_p=0.95, seeds=seeds[::-1])
    assert [g.text for g in together] == [g.text for g in reversed_[::-1]]
    other = generate(model, tok, prompts, 10, batch_size=5, temperature=1.0, seeds=[s + 1 for s in seeds])
    assert [g.text for g in other] != [g.text for g in together]
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate_batch(model, tok, prompts[:2], 4, temperature=1.0, seeds=[1])


def test_text_stops_at_the_end_of_sequence(lm, prompts) -> None:
    model, tok = lm
    eos = min(stop_ids(model, tok))
    original = model.generation_config.eos_token_id
    try:  # make the first greedy token the end of sequence: empty text, one token counted
        first = generate_batch(model, tok, prompts[:1], 1)[0]
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids(tok.tokenize(first.text)[0]) \
            if first.text else eos
        out = generate_batch(model, tok, prompts[:1], 6)[0]
        assert out.text == "" and out.n_tokens == 1
    finally:
        model.generation_config.eos_token_id = original


def test_row_seed_is_stable() -> None:
    assert row_seed(0, "abc", 1) == row_seed("0", "abc", "1") == int(
        __import__("hashlib").sha256(b"0|abc|1").hexdigest()[:15], 16)


def test_finish_reason_says_whether_the_token_limit_cut_the_row(lm, prompts) -> None:
    model, tok = lm
    out = generate_batch(model, tok, prompts, 5)
    for g in out:  # the random tiny model rarely ends on its own within five tokens
        assert g.finish_reason == ("length" if g.n_tokens == 5 and "</s>" not in g.text else "stop")
    assert any(g.finish_reason == "length" for g in out)
    first = out[0].text
    stopped = generate_batch(model, tok, prompts[:1], 5, stop_strings=[first[:2]])[0]
    assert stopped.text.startswith(first[:2]) and stopped.finish_reason == "stop" and stopped.n_tokens < 5


def test_reply_repetition_penalty_spares_the_prompt_and_the_end_of_sequence() -> None:
    import torch

    from selectune.core.generate import ReplyRepetitionPenalty

    ids = torch.tensor([[5, 6, 1, 2, 2], [5, 6, 3, 0, 4]])  # prompt: the first two columns
    scores = torch.tensor([[2.0, -1.0, 4.0, 1.0, 3.0, 5.0, 6.0], [2.0, -1.0, 4.0, 1.0, 3.0, 5.0, 6.0]])
    out = ReplyRepetitionPenalty(2, 2.0, {0})(ids, scores)
    assert out[0].tolist() == [2.0, -2.0, 2.0, 1.0, 3.0, 5.0, 6.0]  # 1 and 2 in the reply: -1 * 2, 4 / 2
    assert out[1].tolist() == [2.0, -1.0, 4.0, 0.5, 1.5, 5.0, 6.0]  # 0 is the end of sequence: untouched
    assert torch.equal(ReplyRepetitionPenalty(5, 2.0, set())(ids, scores), scores)  # nothing generated yet
