"""The teacher's reflection prompts (Jinja templates beside this file): critique an instruction and write a new one
with its answer, or critique an answer and write a better one, between explicit markers."""

from __future__ import annotations

from functools import cache
from typing import Any

# The parts of each reply with their opening marker and closing markers: a local (hf) teacher has each opening
# marker written into its turn and stops at a closing one (TeacherConfig.prefill); the parsers read the same.
INSTRUCTION_PARTS = (("[New Instruction] ", ("[End]", "[New Answer]")), ("\n[New Answer] ", ("[End]",)))
RESPONSE_PARTS = (("[Better Answer] ", ("[End]",)),)


MACROS = {"system": (), "user": ("instruction", "input", "answer")}  # what a reflection prompt file defines


def builtin_file(kind: str) -> str:
    """The project-written prompt file of ``kind`` (instruction or response), beside this module."""
    from importlib.resources import files

    if kind not in ("instruction", "response"):
        raise ValueError(f"unknown reflection prompt {kind!r}; expected 'instruction' or 'response'")
    return str(files("selectune.reflection.prompts") / f"reflect_{kind}.jinja")


def _template(kind: str, path: str | None) -> Any:
    """The prompt file's module, read each time (a file edited in a long-running worker is used at once) and
    compiled once per text."""
    from selectune.core.prompts import read_prompt_file

    source = path or builtin_file(kind)
    return _compiled(read_prompt_file(source), str(source))


@cache
def _compiled(text: str, source: str) -> Any:
    from selectune.core.prompts import prompt_module

    return prompt_module(text, source, MACROS)


def _messages(kind: str, instruction: str, input: str, answer: str, path: str | None) -> list[dict[str, str]]:
    module = _template(kind, path)
    return [{"role": "system", "content": str(module.system()).strip()},
            {"role": "user", "content": str(module.user(instruction.strip(), (input or "").strip(),
                                                        answer.strip())).strip()}]


def instruction_messages(instruction: str, input: str, answer: str, path: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking the teacher to critique (Q, A) and write a new instruction and its answer (from the
    prompt file ``path``, default the built-in one)."""
    return _messages("instruction", instruction, input, answer, path)


def response_messages(instruction: str, input: str, answer: str, path: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking the teacher to critique A for Q and write a better answer."""
    return _messages("response", instruction, input, answer, path)
