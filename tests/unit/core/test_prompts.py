"""The one joiner and template set: exact texts, and the same prompt for IFD, tuning and the judge."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from selectune.core.prompts import (
    ALPACA,
    ALPACA_INPUT,
    chat_frame,
    join_instruction,
    pick_template,
    prompt_ids,
    prompt_text,
)

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: Translate")


@pytest.fixture(scope="module")
def tok(tiny_model: str):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_joiner_puts_the_input_on_the_next_line() -> None:
    assert join_instruction("Translate", "hello") == "Translate\nhello"
    assert join_instruction("Translate", "") == "Translate"
    assert join_instruction("Translate", "  \n") == "Translate"  # whitespace is no input
    assert join_instruction("Translate", None) == "Translate"


def test_templates_render_exactly(tok) -> None:
    assert prompt_text("alpaca", None, "Name a color.", "") == ALPACA.format(instruction="Name a color.")
    assert prompt_text("alpaca", None, "Name a color.", "  ") == ALPACA.format(instruction="Name a color.")
    assert prompt_text("alpaca", None, "Translate", "hello") == ALPACA_INPUT.format(instruction="Translate",
                                                                                    input="hello")
    assert ALPACA_INPUT.format(instruction="I", input="X").endswith("### Instruction:\nI\n\n### Input:\nX\n\n"
                                                                    "### Response:")
    assert prompt_text("vicuna", None, "Translate", "") == VICUNA + " ASSISTANT:"
    assert prompt_text("vicuna", None, "Translate", "hello") == VICUNA + "\nInput:\nhello ASSISTANT:"
    assert prompt_text("chat", tok, "Translate", "hello") == "<|user|>\nTranslate\nhello<|end|>\n<|assistant|>\n"
    assert chat_frame(tok) == ("<|user|>\n", "<|end|>\n<|assistant|>\n")
    with pytest.raises(ValueError, match="no chat template"):
        prompt_text("chat", None, "Translate", "")
    with pytest.raises(ValueError, match="unknown prompt template 'fancy'"):
        prompt_text("fancy", tok, "Translate", "")


def test_plain_templates_add_bos_chat_templates_do_not(tok) -> None:
    text = prompt_text("alpaca", tok, "Add two.")
    assert prompt_ids("alpaca", tok, "Add two.") == tok(text, add_special_tokens=True)["input_ids"]
    ids = prompt_ids("chat", tok, "Add two.")
    assert ids == tok(prompt_text("chat", tok, "Add two."), add_special_tokens=False)["input_ids"]


def test_ifd_scores_the_prompt_tuning_trains_on(tok) -> None:
    """With the same template, IFD's s(A|Q) prefix is exactly the prompt of the tuning example."""
    import pandas as pd

    from selectune.config import IFDConfig
    from selectune.reflection import ifd
    from selectune.tuning import data as sft_data

    for template in ("alpaca", "chat"):
        example = sft_data.encode(tok, template, "Translate to French", "good morning", "bonjour", 512)
        tuned_prompt = tok.decode(example.input_ids[:example.n_prompt], skip_special_tokens=False)
        ifd_prompt = prompt_text(template, tok, "Translate to French", "good morning")
        assert tuned_prompt.removeprefix(tok.bos_token if template == "alpaca" else "") == ifd_prompt
    with pytest.raises(ValueError, match="missing column"):  # the IFD side reads the same two fields
        ifd.ifd_scores(pd.DataFrame({"instruction": ["x"]}), IFDConfig(template="alpaca"), object(), tok)


def test_pick_template_resolves_auto(tok) -> None:
    assert pick_template("auto", "some/base", tok) == "alpaca"
    assert pick_template("auto", "org/thing-Instruct", tok) == "chat"
    assert pick_template("auto", "smollm2-135m-instruct", tok) == "chat"
    assert pick_template("alpaca", "org/thing-Instruct", tok) == "alpaca"
