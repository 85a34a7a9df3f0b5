"""One smoke test per embedded alias: convert once (cached), load, and use on two records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from selectune.config import SelectITConfig
from selectune.core import models
from selectune.data.records import record_id
from selectune.selectit.rater import score_selectit
from tests.fixtures import SHARED_DATA

pytestmark = pytest.mark.slow

PAIRS = [("What is the capital of France?", "", "The capital of France is Paris."),
         ("What is the capital of France?", "", "Bananas are yellow.")]


def _records() -> pd.DataFrame:
    df = pd.DataFrame(PAIRS, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*p) for p in PAIRS])
    return df


@pytest.mark.parametrize(("alias", "layout"), [("gemma-3-270m", "official"), ("smollm2-135m-instruct", "chat")])
def test_causal_alias_scores_two_records(alias: str, layout: str) -> None:
    folder = models.prepare(alias)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert models.is_cached(alias)
    rep = score_selectit(_records(), SelectITConfig(models=[alias], layout=layout), None, progress=False)
    probs = np.stack(rep.table[f"selectit_probs.{alias}"].map(np.stack).to_list())
    assert probs.shape == (2, 5, 5) and np.all(probs > 0) and np.all(probs.sum(-1) <= 1)
    assert rep.table["selectit_score"].notna().all() and rep.raters[0].computed == 10
    assert rep.weights == [models.count_parameters(alias)] and rep.weights[0] > 100e6


@pytest.mark.parametrize("alias", ["gemma-3-270m", "smollm2-135m-instruct"])
def test_fast_tokenizer_load_equals_autotokenizer(alias: str) -> None:
    """models.load_tokenizer reads an alias's tokenizer.json through the tokenizers backend: the same ids (with and
    without special tokens), decoding, special tokens and chat template as AutoTokenizer's class."""
    from transformers import AutoTokenizer

    from selectune.data.records import load_records
    from tests.fixtures import DEMO

    ours, auto = models.load_tokenizer(alias), AutoTokenizer.from_pretrained(models.prepare(alias))
    texts = [t for _, r in load_records(DEMO).records.iterrows() for t in (r["instruction"], r["output"])]
    texts += ["<start_of_turn>user\nhi<end_of_turn>\n<|im_start|>user\nhi<|im_end|>", "Über naïve café 東京 😀 \t 10"]
    for text in texts:
        for special in (True, False):
            ids = auto.encode(text, add_special_tokens=special)
            assert ours.encode(text, add_special_tokens=special) == ids, text
            assert ours.decode(ids) == auto.decode(ids)
            assert ours.decode(ids, skip_special_tokens=True) == auto.decode(ids, skip_special_tokens=True)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "all_special_ids", "padding_side",
                 "chat_template", "model_max_length", "added_tokens_decoder"):
        assert getattr(ours, attr) == getattr(auto, attr), attr
    if auto.chat_template:
        chat = [{"role": "user", "content": "What is 2+2?"}]
        assert ours.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
            auto.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


def test_gemma_shared_prefix_matches_whole_sequences() -> None:
    """Gemma 3 mixes sliding-window and global attention layers: reusing the prompt's cache must not change
    the ratings."""
    from selectune.core import lm
    from selectune.selectit import prompts as rating
    from selectune.selectit.rater import build_texts, rating_token_ids

    model, tok = models.load_causal_lm("gemma-3-270m", dtype="float32")
    texts = build_texts(_records(), rating.default_rating_prompts(5)[:1], "official", tok)[0]
    seqs = [e.ids for e in lm.encode(tok, texts, rating.ANSWER_SUFFIX, 1024)]
    ids = rating_token_ids(tok, 5)
    assert lm.common_prefix_len(seqs) >= 20
    shared = np.concatenate([p for _, p in lm.iter_last_token_probs(model, tok, seqs, ids, 8, 4096)])
    plain = np.concatenate([p for _, p in lm.iter_last_token_probs(model, tok, seqs, ids, 8, 4096,
                                                                           share_prefix=False)])
    assert np.abs(shared - plain).max() < 1e-4


def test_minilm_embeds() -> None:
    emb = models.load_embedder("minilm-l6")
    vecs = emb.encode(["The capital of France is Paris.", "Paris is France's capital city.",
                       "Bananas are yellow."], normalize_embeddings=True)
    assert vecs.shape == (3, 384)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


def test_models_list_reports_cache() -> None:
    rows = {r["alias"]: r for r in models.list_models()}
    assert set(rows) == set(models.ALIASES)
    assert rows["minilm-l6"]["cached"] and rows["minilm-l6"]["parameters"] > 20e6


def test_resolution_order(tmp_path) -> None:
    local = tmp_path / "gemma-3-270m"  # a local folder wins over an alias of the same name
    local.mkdir()
    assert models.resolve(str(local)) == local
    assert models.resolve("someorg/some-model") == "someorg/some-model"
    with pytest.raises(ValueError, match="not a local directory"):
        models.resolve("no-such-model")


@pytest.mark.skipif(not (SHARED_DATA / "selectit_official_rating_prompts.txt").is_file(),
                    reason="needs ../shared/data (the official prompt file and Alpaca records)")
def test_smollm2_official_mode_reproduces_the_released_script() -> None:
    """``fidelity: official`` with the official 9-line prompt file on real Alpaca records, batched, against a
    batch-of-1 float32 re-implementation of the released sentence-level script."""
    from tests.fixtures.official_selectit import official_sentence_scores

    prompts = SHARED_DATA / "selectit_official_rating_prompts.txt"
    rows = json.loads((SHARED_DATA / "cherry_alpaca_3k.json").read_text(encoding="utf-8"))[:6]
    triples = [(r["instruction"], r.get("input", ""), r["output"]) for r in rows]
    df = pd.DataFrame(triples, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*t) for t in triples])
    cfg = SelectITConfig(models=["smollm2-135m-instruct"], fidelity="official", rating_prompts_file=str(prompts),
                         dtype="float32", max_tokens=4096)
    ours = score_selectit(df, cfg, None, progress=False).table["selectit_score"].to_numpy()
    reference = official_sentence_scores(str(models.prepare("smollm2-135m-instruct")), prompts, triples)
    rel = np.abs(ours - reference) / np.abs(reference)
    print(f"official-mode max relative error on {len(df)} Alpaca records: {rel.max():.2e}")
    assert rel.max() < 1e-3
