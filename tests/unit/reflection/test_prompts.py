"""The reflection prompts: what the teacher is asked, exactly."""

from __future__ import annotations

from selectune.reflection.prompts import instruction_messages, response_messages


def test_instruction_prompt_names_every_criterion_and_marker() -> None:
    msgs = instruction_messages("Name a color.", "", "Red.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    low = user.lower()
    for criterion in ("complexity of the topic", "level of detail required", "knowledge required", "ambiguity",
                      "reasoning or problem solving", "helpfulness", "relevance", "accuracy", "level of detail"):
        assert criterion in low, criterion
    for marker in ("[New Instruction]", "[New Answer]", "[End]", "self-contained"):
        assert marker in user
    assert user.startswith("[Instruction]\nName a color.") and "[Answer]\nRed.\n[End of Answer]" in user
    assert "[Input]" not in user


def test_response_prompt_and_input_section() -> None:
    msgs = response_messages("Translate to French", "good morning", "bonjour")
    user = msgs[1]["content"]
    for criterion in ("helpfulness", "relevance", "accuracy", "level of detail"):
        assert criterion in user.lower()
    assert "[Input]\ngood morning\n" in user and "[Better Answer]" in user and "[New Instruction]" not in user
    assert "[Input]" in instruction_messages("Translate to French", "good morning", "bonjour")[1]["content"]
