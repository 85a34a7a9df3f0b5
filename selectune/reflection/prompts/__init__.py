"""The teacher's reflection prompts (Jinja templates beside this file): critique an instruction and write a new one
with its answer, or critique an answer and write a better one, between explicit markers."""

from __future__ import annotations

from functools import cache
from typing import Any

# The parts of each reply with their opening marker and closing markers: a local (hf) teacher has each opening
# marker written into its turn and stops at a closing one (TeacherConfig.prefill); the parsers read the same.
INSTRUCTION_PARTS = (("[New Instruction] ", ("[End]", "[New Answer]")), ("\n[New Answer] ", ("[End]",)))
RESPONSE_PARTS = (("[Better Answer] ", ("[End]",)),)


@cache
def _template(kind: str) -> Any:
    from importlib.resources import files

    import jinja2

    if kind not in ("instruction", "response"):
        raise ValueError(f"unknown reflection prompt {kind!r}; expected 'instruction' or 'response'")
    text = (files("selectune.reflection.prompts") / f"reflect_{kind}.jinja").read_text(encoding="utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(text).module


def _messages(kind: str, instruction: str, input: str, answer: str) -> list[dict[str, str]]:
    module = _template(kind)
    return [{"role": "system", "content": str(module.system()).strip()},
            {"role": "user", "content": str(module.user(instruction.strip(), (input or "").strip(),
                                                        answer.strip())).strip()}]


def instruction_messages(instruction: str, input: str, answer: str) -> list[dict[str, str]]:
    """Chat messages asking the teacher to critique (Q, A) and write a new instruction and its answer."""
    return _messages("instruction", instruction, input, answer)


def response_messages(instruction: str, input: str, answer: str) -> list[dict[str, str]]:
    """Chat messages asking the teacher to critique A for Q and write a better answer."""
    return _messages("response", instruction, input, answer)
