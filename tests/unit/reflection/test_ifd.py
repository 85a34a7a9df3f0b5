"""IFD / reversed-IFD: the batched engine against direct one-record cross-entropy, templates, truncation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from selectune.config import IFDConfig
from selectune.core import losses, models
from selectune.core.prompts import prompt_text
from selectune.reflection import ifd

ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\nName a color.\n\n### Response:")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate\n\n"
                "### Input:\nhello\n\n### Response:")
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: Translate")


@pytest.fixture(scope="module")
def student(tiny_model: str) -> tuple[object, object]:
    return models.load_causal_lm(tiny_model, dtype="float32")


def cfg(tiny_model: str, **kw: object) -> IFDConfig:
    return IFDConfig(model=tiny_model, dtype="float32", **kw)


def sequence_losses(model: object, tok: object, prefixes: list[str], targets: list[str], c: IFDConfig,
                    head_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return losses.sequence_losses(model, tok, prefixes, targets, c.max_tokens, c.batch_size, c.max_batch_tokens,
                                  head_rows)


def direct_loss(model: object, ids: list[int], n_target: int) -> float:
    """Full forward of one sequence, cross-entropy over its last n_target tokens."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    n = len(ids)
    return float(torch.nn.functional.cross_entropy(logits[n - n_target - 1: n - 1], torch.tensor(ids[n - n_target:])))


def toks(tok: object, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_templates_render_exactly(student: tuple[object, object]) -> None:
    _, tok = student
    assert prompt_text("alpaca", None, "Name a color.", "") == ALPACA_NO_INPUT
    assert prompt_text("alpaca", None, "Name a color.", "  ") == ALPACA_NO_INPUT
    assert prompt_text("alpaca", None, "Translate", "hello") == ALPACA_INPUT
    assert prompt_text("vicuna", None, "Translate", "") == VICUNA + " ASSISTANT:"
    assert prompt_text("vicuna", None, "Translate", "hello") == VICUNA + "\nInput:\nhello ASSISTANT:"
    assert prompt_text("chat", tok, "Translate", "hello") == "<|user|>\nTranslate\nhello<|end|>\n<|assistant|>\n"
    assert ifd.reverse_prompt("alpaca", "Paris.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nBelow is the response to an instruction, please guess the corresponding instruction "
        "for the given response.\nParis.\nGenerate the instruction for the above response.\n\n### Response:")
    assert ifd.reverse_prompt("chat", "Paris.", tok).startswith("<|user|>\nBelow is the response to an instruction")
    with pytest.raises(ValueError, match="no chat template|has none"):
        prompt_text("chat", None, "Translate", "")
    tok_plain = type(tok).from_pretrained(tok.name_or_path)
    tok_plain.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        ifd.reverse_prompt("chat", "Paris.", tok_plain)


@pytest.mark.parametrize("template", ["alpaca", "vicuna", "chat"])
def test_four_losses_equal_direct_computation(student: tuple[object, object], records: pd.DataFrame,
                                              tiny_model: str, template: str) -> None:
    model, tok = student
    res = ifd.ifd_scores(records, cfg(tiny_model, template=template), model, tok, progress=False)
    assert list(res.index) == list(records.index) and list(res.columns) == ifd.COLUMNS
    bos = [tok.bos_token_id]  # the tiny tokenizer adds no special tokens: its BOS is the start token
    for i, r in records.iterrows():
        q = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        a_ids, q_ids = toks(tok, r["output"]), toks(tok, q)
        prompt = toks(tok, prompt_text(template, tok, r["instruction"], r["input"]))
        reverse = toks(tok, ifd.reverse_prompt(template, r["output"], tok))
        want = {"loss_a": direct_loss(model, bos + a_ids, len(a_ids)),
                "loss_a_given_q": direct_loss(model, bos + prompt + a_ids, len(a_ids)),
                "loss_q": direct_loss(model, bos + q_ids, len(q_ids)),
                "loss_q_given_a": direct_loss(model, bos + reverse + q_ids, len(q_ids))}
        for col, value in want.items():
            assert res.loc[i, col] == pytest.approx(value, rel=1e-4), (i, col)
        assert res.loc[i, "n_tokens_a"] == len(a_ids) and res.loc[i, "n_tokens_q"] == len(q_ids)
    assert not res["ifd_truncated"].any()


def test_ratios_are_exp_of_loss_differences(student: tuple[object, object], records: pd.DataFrame,
                                            tiny_model: str) -> None:
    model, tok = student
    res = ifd.ifd_scores(records, cfg(tiny_model), model, tok, progress=False)
    for _, r in res.iterrows():
        assert r["ifd"] == pytest.approx(np.exp(r["loss_a_given_q"] - r["loss_a"]), rel=1e-12)
        assert r["ifd"] == pytest.approx(np.exp(r["loss_a_given_q"]) / np.exp(r["loss_a"]), rel=1e-9)
        assert r["rifd"] == pytest.approx(np.exp(r["loss_q_given_a"] - r["loss_q"]), rel=1e-12)
        assert r["ifd_loss_ratio"] == pytest.approx(r["loss_a_given_q"] / r["loss_a"], rel=1e-12)
        assert r["rifd_loss_ratio"] == pytest.approx(r["loss_q_given_a"] / r["loss_q"], rel=1e-12)
    assert res["ifd"].nunique() == len(res)  # records differ


def test_batched_equals_one_at_a_time(student: tuple[object, object], records: pd.DataFrame,
                                      tiny_model: str) -> None:
    model, tok = student
    df = records.set_index(pd.Index([10, 3, 7, 1, 5, 2]))  # a non-default index is kept
    batched = ifd.ifd_scores(df, cfg(tiny_model, batch_size=16, max_batch_tokens=4096), model, tok, progress=False)
    single = pd.concat([ifd.ifd_scores(df.loc[[i]], cfg(tiny_model, batch_size=1), model, tok, progress=False)
                        for i in df.index])
    assert list(batched.index) == list(df.index)
    num = [c for c in ifd.COLUMNS if c != "ifd_truncated"]
    np.testing.assert_allclose(batched[num].to_numpy(float), single.loc[batched.index, num].to_numpy(float),
                               rtol=1e-5)


def test_chunked_head_equals_unchunked(student: tuple[object, object], tiny_model: str) -> None:
    model, tok = student
    prefixes = ["", "### Instruction:\nwhat is the sum\n\n### Response:", "translate good"]
    targets = ["two and three is 5", "the sum of a list", "a " * 40]
    one = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model), head_rows=1)
    # one sequence per body batch, head chunks of 7 rows: chunks span batches and leave remainders
    carried = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model, batch_size=1), head_rows=7)
    full = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model), head_rows=10**6)
    default = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model))
    np.testing.assert_allclose(one[0], full[0], rtol=1e-6)
    np.testing.assert_allclose(default[0], full[0], rtol=1e-6)
    np.testing.assert_allclose(carried[0], full[0], rtol=1e-5)
    assert one[1].tolist() == [len(toks(tok, t)) for t in targets] and not one[2].any()
    for p, t, loss in zip(prefixes, targets, one[0], strict=True):
        ids = [tok.bos_token_id] + toks(tok, p) + toks(tok, t)
        assert loss == pytest.approx(direct_loss(model, ids, len(toks(tok, t))), rel=1e-4)


class WrappedHead(torch.nn.Module):
    """An LM head that is not a plain nn.Linear (as PEFT wraps one): the engine calls it per chunk."""

    def __init__(self, lin: torch.nn.Linear) -> None:
        super().__init__()
        self.lin, self.weight = lin, lin.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_wrapped_head_and_softcap_match_direct(tiny_model: str) -> None:
    model, tok = models.load_causal_lm(tiny_model, dtype="float32")
    prefixes, targets = ["what is the sum", ""], ["two and three is 5", "paris"]
    plain = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model))[0]
    model.lm_head = WrappedHead(model.lm_head)
    np.testing.assert_allclose(sequence_losses(model, tok, prefixes, targets, cfg(tiny_model), head_rows=3)[0],
                               plain, rtol=1e-6)
    model.config.final_logit_softcapping = 5.0  # Gemma 2 style: cap * tanh(logits / cap)
    capped = sequence_losses(model, tok, prefixes, targets, cfg(tiny_model))[0]
    for p, t, loss in zip(prefixes, targets, capped, strict=True):
        ids, n = [tok.bos_token_id] + toks(tok, p) + toks(tok, t), len(toks(tok, t))
        with torch.no_grad():
            logits = 5.0 * torch.tanh(model(input_ids=torch.tensor([ids])).logits[0] / 5.0)
        want = torch.nn.functional.cross_entropy(logits[len(ids) - n - 1: -1], torch.tensor(ids[-n:]))
        assert loss == pytest.approx(float(want), rel=1e-4)
    assert np.all(np.abs(capped - plain) > 1e-3)


def test_pack_truncation_keeps_prefix_end_and_target_head() -> None:
    start, prefix, target = [1], list(range(10, 60)), list(range(100, 140))
    ids, n, cut = losses.pack(start, prefix, target, 32)  # room 31: prefix keeps 15 (its end), target 16 (its head)
    assert (ids, n, cut) == ([1] + prefix[35:] + target[:16], 16, True)
    assert losses.pack(start, [1] + prefix[:5], target[:3], 32) == ([1] + prefix[:5] + target[:3], 3, False)
    assert losses.pack(start, prefix[:3], target, 32) == ([1] + prefix[:3] + target[:28], 28, True)
    assert losses.pack(start, prefix, target[:4], 32) == ([1] + prefix[-27:] + target[:4], 4, True)


def test_truncated_record_scores_same_tokens(student: tuple[object, object], records: pd.DataFrame,
                                             tiny_model: str) -> None:
    model, tok = student
    long = records.iloc[[5]]  # a 12-sentence answer, longer than 32 tokens with its prompt
    res = ifd.ifd_scores(long, cfg(tiny_model, max_tokens=32), model, tok, progress=False).iloc[0]
    assert res["ifd_truncated"]
    a_ids = toks(tok, long["output"].iloc[0])
    n = int(res["n_tokens_a"])
    assert 0 < n < len(a_ids)
    prompt = toks(tok, prompt_text("alpaca", None, long["instruction"].iloc[0], ""))
    kept = 31 - n
    assert res["loss_a"] == pytest.approx(direct_loss(model, [tok.bos_token_id] + a_ids[:n], n), rel=1e-4)
    assert res["loss_a_given_q"] == pytest.approx(
        direct_loss(model, [tok.bos_token_id] + prompt[-kept:] + a_ids[:n], n), rel=1e-4)


def test_empty_response_names_the_record(student: tuple[object, object], records: pd.DataFrame,
                                         tiny_model: str) -> None:
    model, tok = student
    bad = records.head(2).copy()
    bad.loc[1, "output"] = ""
    with pytest.raises(ValueError, match=f"record {bad.loc[1, 'id']}: empty response"):
        ifd.ifd_scores(bad, cfg(tiny_model), model, tok, progress=False)
    with pytest.raises(ValueError, match="missing column"):
        ifd.ifd_scores(records.drop(columns="output"), cfg(tiny_model), model, tok, progress=False)


def test_start_token_not_doubled(student: tuple[object, object], tiny_model: str) -> None:
    model, tok = student
    with_bos = sequence_losses(model, tok, ["<s>what is the sum"], ["5"], cfg(tiny_model))
    without = sequence_losses(model, tok, ["what is the sum"], ["5"], cfg(tiny_model))
    assert with_bos[0][0] == pytest.approx(without[0][0], rel=1e-6)


@pytest.mark.slow
def test_gemma_smoke_two_records() -> None:
    """The real student: Gemma 3 (tied 262k head) through the engine equals its own full forward."""
    model, tok = models.load_causal_lm("gemma-3-270m", dtype="float32")
    df = pd.DataFrame({"id": ["a", "b"], "instruction": ["What is the capital of France?", "Translate to French"],
                       "input": ["", "good morning"], "output": ["The capital of France is Paris.", "bonjour"]})
    res = ifd.ifd_scores(df, IFDConfig(dtype="float32"), model, tok, progress=False)
    assert np.isfinite(res.drop(columns="ifd_truncated").to_numpy(float)).all() and not res["ifd_truncated"].any()
    start = losses.start_ids(tok)
    assert start == [tok.bos_token_id]
    a_ids = toks(tok, df["output"][0])
    prompt = toks(tok, prompt_text("alpaca", None, df["instruction"][0], ""))
    assert res["loss_a"][0] == pytest.approx(direct_loss(model, start + a_ids, len(a_ids)), rel=1e-4)
    assert res["loss_a_given_q"][0] == pytest.approx(direct_loss(model, start + prompt + a_ids, len(a_ids)),
                                                     rel=1e-4)
    assert res["loss_a_given_q"][0] < res["loss_a"][0]  # the question makes its answer easier to predict


def test_official_mode_scores_instruction_and_input_without_a_separator(tiny_model: str,
                                                                       records: pd.DataFrame) -> None:
    """Reflection-Tuning's data_analysis.py: s(Q) and s(Q|A') on ``instruct_i_ori + input_i``."""
    from transformers import AutoTokenizer

    from selectune.reflection.config import IFDConfig
    from selectune.reflection.ifd import ifd_scores

    assert (IFDConfig(fidelity="official").template, IFDConfig(fidelity="official").max_tokens) == ("vicuna", 2048)
    official = ifd_scores(records, IFDConfig(model=tiny_model, dtype="float32", fidelity="official"), progress=False)
    ours = ifd_scores(records, IFDConfig(model=tiny_model, dtype="float32", template="vicuna", max_tokens=2048),
                      progress=False)
    with_input = records["input"].str.strip() != ""
    assert with_input.sum() == 1
    pd.testing.assert_frame_equal(official[~with_input], ours[~with_input])
    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = records[with_input].iloc[0]
    assert official.loc[with_input, "n_tokens_q"].item() == len(tok(row["instruction"] + row["input"],
                                                                     add_special_tokens=False)["input_ids"])
    assert official.loc[with_input, "loss_q"].item() != ours.loc[with_input, "loss_q"].item()
    assert official.loc[with_input, "loss_a"].item() == ours.loc[with_input, "loss_a"].item()


def test_the_stage_scores_in_chunks_with_one_student_load(tiny_model: str, records: pd.DataFrame, tmp_path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.reflection import stage
    from selectune.reflection.config import IFDScoringConfig

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    cfg = IFDScoringConfig(model=tiny_model, dtype="float32", max_tokens=128)
    src = tmp_path / "scored.parquet"
    scored = records.assign(selectit_score=np.linspace(0, 1, len(records)))
    scored.to_parquet(src, index=False)
    whole = pd.concat([scored, ifd.ifd_scores(scored, cfg, progress=False)], axis=1)
    loads: list[str] = []
    load = ifd.load_student
    monkeypatch.setattr(ifd, "load_student", lambda c: loads.append(c.model) or load(c))
    monkeypatch.setattr(stage, "IFD_CHUNK", 2)
    res = stage.ifd_stage(cfg, src, tmp_path / "run")
    chunked = pd.read_parquet(res.outputs.scored)
    assert loads == [tiny_model] and len(records) > 4, "one load for every chunk"
    pd.testing.assert_frame_equal(chunked, whole, rtol=1e-5, atol=1e-6)
    assert res.metrics["records_in"] == len(records)
    assert res.metrics["ifd_median"] == pytest.approx(whole["ifd"].median(), rel=1e-6)
