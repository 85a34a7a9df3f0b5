"""The reflection prompts: what the teacher is asked, exactly."""

from __future__ import annotations

import re

import pytest

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


PROMPT_FILE = """{% macro system() -%}You rewrite data.{%- endmacro %}
{% macro user(instruction, input, answer) -%}
Q: {{ instruction }}{{ " (" ~ input ~ ")" if input }}
A: {{ answer }}
Write [Better Answer] ... [End].
{%- endmacro %}"""


def test_prompt_files_replace_the_built_in_prompts(tmp_path) -> None:
    from selectune.reflection.config import ReflectionConfig

    path = tmp_path / "response.jinja"
    path.write_text(PROMPT_FILE, encoding="utf-8")
    cfg = ReflectionConfig.model_validate({"prompts": {"reflect_response": str(path)}})
    msgs = response_messages("Translate to French", "good morning", "bonjour", cfg.prompts.reflect_response)
    assert msgs == [{"role": "system", "content": "You rewrite data."},
                    {"role": "user", "content": "Q: Translate to French (good morning)\nA: bonjour\n"
                                                "Write [Better Answer] ... [End]."}]
    assert response_messages("Translate to French", "good morning", "bonjour") != msgs  # the built-in one
    # edited in the same process (a long-running worker): the new text is used at once
    path.write_text(PROMPT_FILE.replace("You rewrite data.", "You improve data."), encoding="utf-8")
    again = response_messages("Translate to French", "good morning", "bonjour", cfg.prompts.reflect_response)
    assert again[0] == {"role": "system", "content": "You improve data."} and again[1] == msgs[1]


@pytest.mark.parametrize("text,message", [
    ("{% macro user(instruction, input, answer) %}x{% endmacro %}", "needs a macro system(); found none"),
    ("{% macro system() %}s{% endmacro %}{% macro user(instruction, answer) %}x{% endmacro %}",
     "needs a macro user(instruction, input, answer); found user(instruction, answer)"),
    ("{% macro system() %}s{% endmacro %}{% macro user(instruction, input, answer) %}{{ x {% endmacro %}",
     "not a valid Jinja template"),
])
def test_a_prompt_file_is_checked_when_the_config_loads(tmp_path, text: str, message: str) -> None:
    from pydantic import ValidationError

    from selectune.reflection.config import ReflectionConfig

    path = tmp_path / "bad.jinja"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError, match=re.escape(f"{path}: {message}")):
        ReflectionConfig.model_validate({"prompts": {"reflect_instruction": str(path)}})
    with pytest.raises(ValidationError, match="no such file"):
        ReflectionConfig.model_validate({"prompts": {"reflect_response": str(tmp_path / "missing.jinja")}})


def test_a_changed_prompt_file_reruns_the_stage_and_asks_the_teacher_again(tmp_path, monkeypatch, tiny_model,
                                                                          records) -> None:
    from selectune.reflection.config import ReflectionConfig
    from selectune.reflection.stage import recycle_stage
    from tests.fixtures.openai_server import FakeOpenAI

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    records.head(2).to_parquet(tmp_path / "records.parquet")
    path = tmp_path / "response.jinja"
    path.write_text(PROMPT_FILE, encoding="utf-8")
    with FakeOpenAI({"reflector": True}) as srv:
        cfg = ReflectionConfig.model_validate({
            "student": {"model": tiny_model, "dtype": "float32"}, "prompts": {"reflect_response": str(path)},
            "teacher": {"backend": "openai", "model": "m", "base_url": srv.url, "max_retries": 0}})
        first = recycle_stage(cfg, tmp_path / "records.parquet", tmp_path / "run")
        calls = srv.total
        custom = sum(b["messages"][0]["content"] == "You rewrite data." for b in srv.bodies)
        same = recycle_stage(cfg, tmp_path / "records.parquet", tmp_path / "run")
        path.write_text(PROMPT_FILE.replace("You rewrite data.", "You improve answers."), encoding="utf-8")

        changed = recycle_stage(cfg, tmp_path / "records.parquet", tmp_path / "run")
        new_calls = srv.total - calls
    assert not first.skipped and same.skipped and not changed.skipped
    assert calls >= 4 and custom >= 2 and new_calls == custom  # only the calls of the changed prompt are new
    assert {b["messages"][0]["content"] for b in srv.bodies[-new_calls:]} == {"You improve answers."}
