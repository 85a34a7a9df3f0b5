"""SelectIT rating on the batched last-position engine (tiny random model): batched == one at a time, equal to a
full forward pass, shared prefixes, truncation, the chat layout, the rating cache and crash resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selectune.config import SelectITConfig
from selectune.core import lm, models
from selectune.selectit import prompts as rating
from selectune.selectit import scores
from selectune.selectit.rater import build_texts, rate, rating_cache, rating_prompts, rating_token_ids, score_selectit


@pytest.fixture(scope="module")
def loaded(tiny_model: str):
    return models.load_causal_lm(tiny_model, dtype="float32")


def _texts(records: pd.DataFrame) -> list[str]:
    return build_texts(records, rating.default_rating_prompts(5), "official", None)[0]


def test_rating_token_ids_single_digits(loaded) -> None:
    _, tok = loaded
    ids = rating_token_ids(tok, 5)
    assert [tok.convert_ids_to_tokens(i) for i in ids] == ["1", "2", "3", "4", "5"]
    with pytest.raises(ValueError, match="single token for rating '10'"):
        rating_token_ids(tok, 10)


def test_batched_equals_one_at_a_time(loaded, records: pd.DataFrame) -> None:
    model, tok = loaded
    enc = lm.encode(tok, _texts(records), rating.ANSWER_SUFFIX, 512)
    seqs = [e.ids for e in enc]
    assert len({len(s) for s in seqs}) > 5  # real padding happens
    token_ids = rating_token_ids(tok, 5)

    def run(batch_size: int) -> np.ndarray:
        out = np.zeros((len(seqs), 5))
        for idx, p in lm.iter_last_token_probs(model, tok, seqs, token_ids, batch_size, 1 << 20):
            out[idx] = p
        return out

    single, batched = run(1), run(8)
    assert np.abs(single - batched).max() < 1e-4
    assert lm.common_prefix_len(seqs) == 0  # five different rating prompts: nothing shared
    assert np.abs(single).sum() > 0 and single.std() > 0  # ratings differ between prompts/records


def test_last_position_probs_match_full_forward(loaded, records: pd.DataFrame) -> None:
    """The engine's probabilities equal a plain full-sequence forward + softmax (the official loop)."""
    import torch

    model, tok = loaded
    text = _texts(records)[3]
    token_ids = rating_token_ids(tok, 5)
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits[0, -1]
    expected = torch.softmax(logits.float(), -1)[token_ids].numpy()
    seq = lm.encode(tok, [text], rating.ANSWER_SUFFIX, 512)[0].ids
    (_, got), = list(lm.iter_last_token_probs(model, tok, [seq], token_ids))
    assert np.allclose(got[0], expected, atol=1e-6)


def test_truncation_keeps_answer_cue(loaded, records: pd.DataFrame) -> None:
    _, tok = loaded
    long_text = _texts(records.iloc[[5]])[0]
    full = tok(long_text)["input_ids"]
    enc = lm.encode(tok, [long_text], rating.ANSWER_SUFFIX, 64)[0]
    assert enc.truncated and len(enc.ids) == 64 and len(full) > 64
    assert tok.decode(enc.ids).endswith("The answer is: \n")
    assert enc.ids[:10] == full[:10]
    with pytest.raises(ValueError, match="max_length 64"):
        lm.encode(tok, [long_text], rating.ANSWER_SUFFIX, 64, truncation="error")


def test_a_record_over_the_token_limit_is_named_when_truncation_is_error(tiny_model: str, records) -> None:
    """Bad input: with ``truncation: error`` an over-long record stops scoring with its id, row and field; with the
    default (right) it is cut and flagged."""
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", max_tokens=300, truncation="error")
    prompts = rating.default_rating_prompts(5)  # record 6 takes 362-415 tokens with them, the others <= 213
    with pytest.raises(ValueError, match=rf"record {records['id'][5]} \(row 6, instruction 'Explain what a "
                                         r"function.*rating prompt 1 take \d+ tokens, over selectit.max_tokens 300"):
        rate(records, tiny_model, cfg, prompts, progress=False)
    cut = rate(records, tiny_model, cfg.model_copy(update={"truncation": "right"}), prompts, progress=False)
    flags = cut.truncated.reshape(6, len(prompts))
    assert flags[5].all() and not flags[:5].any()


def test_chat_layout(loaded, records: pd.DataFrame) -> None:
    _, tok = loaded
    texts, tail = build_texts(records.head(1), ["R"], "chat", tok)
    assert texts[0].startswith("<|user|>\nR\nInstruction:") and texts[0].endswith("<|end|>\n<|assistant|>\n")
    assert tail.endswith("<|assistant|>\n")
    tok_no_chat = type(tok).from_pretrained(tok.name_or_path)
    tok_no_chat.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        build_texts(records.head(1), ["R"], "chat", tok_no_chat)


class CountingLoader:
    """Wraps models.load_causal_lm and counts the rows each loaded model runs (forward hook)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> None:
        self.rows = 0
        self.calls = 0
        self.fail_after = fail_after
        real = models.load_causal_lm

        def load(*args, **kwargs):
            model, tok = real(*args, **kwargs)
            model.register_forward_pre_hook(self._hook, with_kwargs=True)
            return model, tok

        monkeypatch.setattr(models, "load_causal_lm", load)

    def _hook(self, module, args, kwargs):
        if "logits_to_keep" not in kwargs:  # a shared-prefix pass, not a rating batch
            return
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.rows += kwargs["input_ids"].shape[0]


def test_cache_skips_known_rows(tiny_model: str, records: pd.DataFrame, tmp_path, monkeypatch) -> None:
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", batch_size=4)
    cache = rating_cache(tmp_path / "c.sqlite")
    counter = CountingLoader(monkeypatch)
    first = score_selectit(records.head(4), cfg, cache, progress=False)
    assert counter.rows == 4 * 5 and len(cache) == 20
    again = score_selectit(records.head(4), cfg, cache, progress=False)
    assert counter.rows == 20  # nothing recomputed, the model is not even loaded
    assert again.raters[0].cache_hits == 20 and again.raters[0].computed == 0
    assert np.array_equal(first.table["selectit_score"], again.table["selectit_score"])
    grown = score_selectit(records, cfg, cache, progress=False)  # two new records
    assert counter.rows == 20 + 2 * 5
    assert np.allclose(grown.table["selectit_score"][:4], first.table["selectit_score"])
    # a different K, layout or dtype is a different key
    score_selectit(records.head(1), cfg.model_copy(update={"rating_scale": 4}), cache, progress=False)
    assert counter.rows == 30 + 5


def test_crash_resumes_without_rescoring(tiny_model: str, records: pd.DataFrame, tmp_path, monkeypatch) -> None:
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", batch_size=4, max_batch_tokens=1 << 20)
    cache = rating_cache(tmp_path / "c.sqlite")
    crashing = CountingLoader(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_selectit(records, cfg, cache, progress=False)
    # batches run per rating prompt (6 records: 4 + 2), so three batches persisted 4 + 2 + 4 ratings
    assert crashing.rows == 10 and len(cache) == 10
    monkeypatch.undo()  # drop the crashing loader
    resumed = CountingLoader(monkeypatch)
    report = score_selectit(records, cfg, cache, progress=False)
    assert resumed.rows == 30 - 10 and report.raters[0].cache_hits == 10
    fresh = score_selectit(records, cfg, None, progress=False)
    assert np.allclose(report.table["selectit_score"], fresh.table["selectit_score"])


def test_score_columns_and_model_weights(tiny_model: str, tiny_model_2: str, records: pd.DataFrame) -> None:
    cfg = SelectITConfig(models=[tiny_model, tiny_model_2], dtype="float32")
    rep = score_selectit(records, cfg, None, progress=False)
    t = rep.table
    a, b = (models.model_key(m) for m in cfg.models)
    for key in (a, b):
        assert {f"selectit_sentence.{key}", f"selectit_token.{key}", f"selectit_probs.{key}",
                f"selectit_base.{key}"} <= set(t.columns)
        assert np.asarray(t[f"selectit_probs.{key}"].iloc[0]).shape == (5, 5)
    # default weights = parameter counts (equal architectures here) -> plain mean
    assert rep.weights == [models.count_parameters(tiny_model)] * 2
    assert np.allclose(t["selectit_score"], (t[f"selectit_sentence.{a}"] + t[f"selectit_sentence.{b}"]) / 2)
    # the per-model score recomputes from the stored probabilities
    probs = np.stack(t[f"selectit_probs.{a}"].map(np.stack).to_list())
    manual = scores.sentence_scores(scores.token_scores(probs), 0.2)
    assert np.allclose(manual, t[f"selectit_sentence.{a}"])
    assert t["selectit_truncated"].dtype == bool and not t["selectit_truncated"].any()
    weighted = score_selectit(records, cfg.model_copy(update={"weights": [1.0, 3.0]}), None, progress=False).table
    assert np.allclose(weighted["selectit_score"],
                       (t[f"selectit_sentence.{a}"] + 3 * t[f"selectit_sentence.{b}"]) / 4)


def test_rating_prompts_file(tmp_path, tiny_model: str, records: pd.DataFrame) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("Score it 1-5.\nGive a rating.\n")
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", rating_prompts_file=str(f))
    assert rating_prompts(cfg) == ["Score it 1-5.", "Give a rating."]
    res = rate(records.head(2), tiny_model, cfg, rating_prompts(cfg), progress=False)
    assert res.probs.shape == (2, 2, 5)


def test_shared_prefix_equals_whole_sequences(loaded, records: pd.DataFrame) -> None:
    model, tok = loaded
    texts = build_texts(records, ["Rate the response from 1 to 5. Reply with the number only."], "official", None)[0]
    seqs = [e.ids for e in lm.encode(tok, texts, rating.ANSWER_SUFFIX, 512)]
    n_prefix = lm.common_prefix_len(seqs)
    assert n_prefix >= 8 and all(s[:n_prefix] == seqs[0][:n_prefix] for s in seqs)
    token_ids = rating_token_ids(tok, 5)

    def run(share: bool, batch_size: int) -> np.ndarray:
        out = np.zeros((len(seqs), 5))
        for idx, p in lm.iter_last_token_probs(model, tok, seqs, token_ids, batch_size, 1 << 20,
                                                      share_prefix=share):
            out[idx] = p
        return out

    plain = run(False, 1)
    assert np.abs(run(True, 4) - plain).max() < 1e-5
    assert np.abs(run(True, 1) - plain).max() < 1e-5
