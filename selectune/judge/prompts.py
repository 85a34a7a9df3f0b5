"""The judge's prompt templates and its pure parser: the 0-9 rating is the expected value of the next-token
distribution over the ten digit tokens, renormalized over the ten.

The prompts paraphrase the official ones (github.com/nusnlp/Self-J, judge.py) and are wrapped in the model's own
prompt template (Alpaca for base models, the chat template for instruct models), as the official trainer wraps
them in its Alpaca-style prompt. The question is the joined instruction and input
(:func:`selectune.core.prompts.join_instruction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from selectune.core.lm import digit_token_ids
from selectune.core.prompts import adds_special_tokens, join_instruction, prompt_text

WITH_REF = ("Act as a careful, precise judge of answer quality. Rate the answer to the question on a scale from 0 "
            "to 9, where a higher number means a better answer. Use the reference answer to make your judgement. "
            "Reply with one integer from 0 to 9.\n\n[Question]\n{question}\n\n[Reference]\n{reference}\n\n"
            "[Answer]\n{response}")
REF_FREE = ("Act as a careful, precise judge of answer quality. Rate the answer to the question on a scale from 0 "
            "to 9, where a higher number means a better answer. Reply with one integer from 0 to 9.\n\n"
            "[Question]\n{question}\n\n[Answer]\n{response}")
SENTINEL = "\x00JUDGE\x00"


MACROS = {True: {"prompt": ("question", "answer", "reference")}, False: {"prompt": ("question", "answer")}}
Texts = tuple[str | None, str | None]  # (with-reference, reference-free) prompt-file texts; None: built in


def prompt_texts(prompts: Any) -> Texts:
    """The texts of a JudgePrompts' files (None where built in), each checked to define its macro."""
    from selectune.core.prompts import prompt_module, read_prompt_file

    texts = []
    for with_ref, path in ((True, prompts.with_reference), (False, prompts.without_reference)):
        text = read_prompt_file(path) if path else None
        if text is not None:
            prompt_module(text, str(path), MACROS[with_ref])
        texts.append(text)
    return texts[0], texts[1]


@cache
def _module(text: str, with_ref: bool) -> Any:
    from selectune.core.prompts import prompt_module

    return prompt_module(text, "judge prompt", MACROS[with_ref])


def judge_prompt(instruction: str, input: str | None, response: str, reference: str | None = None,
                 texts: Texts = (None, None)) -> str:
    """The with-reference prompt when ``reference`` is given, else the reference-free one (from ``texts`` when
    given, else the built-in ones)."""
    q = join_instruction(instruction, input)
    text = texts[0] if reference is not None else texts[1]
    if text is not None:
        args = (q, response, reference) if reference is not None else (q, response)
        return str(_module(text, reference is not None).prompt(*args)).strip()
    if reference is None:
        return REF_FREE.format(question=q, response=response)
    return WITH_REF.format(question=q, reference=reference, response=response)


def digit_ids(tokenizer: Any) -> list[int]:
    """Vocabulary ids of the single tokens "0".."9" (plain, else with a leading-space marker)."""
    return digit_token_ids(tokenizer, list("0123456789"), "the digit")


def judge_inputs(tokenizer: Any, template: str, instructions: Sequence[str], inputs: Sequence[str | None],
                 responses: Sequence[str], references: Sequence[str] | None, max_length: int,
                 texts: Texts = (None, None)) -> list[list[int]]:
    """Token ids of the templated judge prompts, ending where the rating digit comes next.

    Over-long prompts keep their head and the template's answer cue (the end of the answer is cut)."""
    from selectune.core.lm import encode

    refs = references if references is not None else [None] * len(responses)
    if not len(instructions) == len(inputs) == len(responses) == len(refs):
        raise ValueError(f"judge_inputs: {len(instructions)} instructions, {len(inputs)} inputs, {len(responses)} "
                         f"responses, {len(refs)} references; expected equal lengths")
    tail = prompt_text(template, tokenizer, SENTINEL).split(SENTINEL)[1]
    prompts = [prompt_text(template, tokenizer, judge_prompt(i, x, r, ref, texts))
               for i, x, r, ref in zip(instructions, inputs, responses, refs, strict=True)]
    return [e.ids for e in encode(tokenizer, prompts, tail, max_length, "right",
                                  add_special_tokens=adds_special_tokens(template))]


def expected_score(probs: np.ndarray) -> np.ndarray:
    """Expected digit, in [0, 9]."""
    return np.asarray(probs, dtype=float) @ np.arange(10)
