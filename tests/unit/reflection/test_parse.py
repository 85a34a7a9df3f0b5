"""The tolerant reply parsers (pure functions): every failure keeps its reason and the raw reply."""

from __future__ import annotations

import pytest

from selectune.reflection.parse import parse_instruction_reflection, parse_response_reflection

GOOD = ("Explain X.", "X is Y.")
INSTRUCTION_CASES = [
    ("plain", "Critique: weak.\n[New Instruction] Explain X. [End]\n[New Answer] X is Y. [End]", GOOD),
    ("bold markers", "**[New Instruction]** Explain X. **[End]**\n\n**[New Answer]**\nX is Y.\n**[End]**", GOOD),
    ("headers", "### [New Instruction]\nExplain X.\n### [End]\n### [New Answer]\nX is Y.\n### [End]", GOOD),
    ("missing final end", "### [New Instruction]\nExplain X.\n### [End]\n### [New Answer]\nX is Y.",
     "truncated: no [End] after the answer"),
    ("case and label-colon form", "NEW INSTRUCTION: Explain X.\nnew answer: X is Y.\n[end]", GOOD),
    ("no end between", "[new instruction] Explain X.\n[NEW ANSWER] X is Y. [END] Hope this helps!", GOOD),
    ("chatter names markers first",
     "I will write a [New Instruction] and a [New Answer].\n[New Instruction] Explain X. [End]\n"
     "[New Answer] X is Y. [End]", GOOD),
    ("code block with [End] inside",
     "[New Instruction] Write code. [End]\n[New Answer] Use:\n```python\nprint('[End]')\nx = a[0]\n```\nDone.\n"
     "[End]\nThanks", ("Write code.", "Use:\n```python\nprint('[End]')\nx = a[0]\n```\nDone.")),
    ("whole reply fenced", "```\n[New Instruction] Explain X. [End]\n[New Answer] X is Y. [End]\n```", GOOD),
    ("bold kept when balanced", "[New Instruction] Explain X. [End] [New Answer] X is **Y**. [End]",
     ("Explain X.", "X is **Y**.")),
    ("empty reply", "   \n", "empty reply"),
    ("no instruction marker", "Here is a better answer: X is Y.", "no [New Instruction] marker"),
    ("no answer marker", "[New Instruction] Explain X. [End]", "no [New Answer] marker"),
    ("empty instruction", "[New Instruction] [End] [New Answer] X is Y. [End]", "empty instruction"),
    ("empty answer", "[New Instruction] Explain X. [End] [New Answer] **[End]**", "empty answer"),
    ("placeholder echoed", "[New Instruction] <the new instruction> [End]\n[New Answer] <the answer> [End]",
     "instruction is the prompt's placeholder"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in INSTRUCTION_CASES], ids=[c[0] for c in INSTRUCTION_CASES])
def test_parse_instruction_reflection(text: str, expected: tuple[str, str] | str) -> None:
    p = parse_instruction_reflection(text)
    assert p.raw == text
    if isinstance(expected, tuple):
        assert (p.ok, p.instruction, p.answer, p.reason) == (True, *expected, "ok")
    else:
        assert (p.ok, p.instruction, p.answer, p.reason) == (False, None, None, expected)


RESPONSE_CASES = [
    ("plain", "Too short.\n[Better Answer] Paris is France's capital. [End]", "Paris is France's capital."),
    ("bold colon form", "**Better Answer:** Paris is France's capital. [End]", "Paris is France's capital."),
    ("cut off", "[Better Answer] Paris is the capital of", "truncated: no [End] after the answer"),
    ("new-answer synonym", "[New Answer]\nParis.\n[End]", "Paris."),
    ("no marker", "The answer is fine as it is.", "no [Better Answer] marker"),
    ("empty", "[Better Answer]\n\n[End]", "empty answer"),
    ("placeholder", "[Better Answer] <the answer> [End]", "answer is the prompt's placeholder"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in RESPONSE_CASES], ids=[c[0] for c in RESPONSE_CASES])
def test_parse_response_reflection(text: str, expected: str) -> None:
    p = parse_response_reflection(text)
    if expected.startswith(("no ", "empty", "answer is", "truncated")):
        assert (p.ok, p.answer, p.reason, p.raw) == (False, None, expected, text)
    else:
        assert (p.ok, p.instruction, p.answer) == (True, None, expected)


def test_a_reply_cut_off_by_the_token_limit_is_truncated_even_when_it_parses() -> None:
    text = "[New Instruction] Explain X. [End]\n[New Answer] X is Y. [End]"
    assert parse_instruction_reflection(text, "stop").ok and parse_instruction_reflection(text, "").ok
    cut = parse_instruction_reflection(text, "length")
    assert (cut.ok, cut.reason, cut.raw) == (False, "truncated: the reply hit the token limit", text)
    assert parse_response_reflection("[Better Answer] Paris. [End]", "length").reason.startswith("truncated")
