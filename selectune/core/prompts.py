"""The one instruction joiner and the one set of prompt templates, used by SelectIT, IFD, tuning and the judge.

Joiner: an instruction and its input (context) become one text as ``instruction + "\\n" + input`` -- the input
on the line after the instruction -- or the instruction alone when the input is empty or whitespace. That is
the text a rater rates, the instruction Q whose losses IFD measures, the user turn of a chat template, and
the question a judge reads. (The papers' released code never joins the two fields itself: SelectIT and
Self-J ship data with the input already inside the instruction, and Reflection-Tuning concatenates them
without any separator for s(Q); one newline keeps them apart and matches SelectIT's "\\n"-separated layout.)

Templates put that text in front of a response:

* ``alpaca``: the Stanford Alpaca prompt (github.com/tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), which
  has an input section of its own, so the fields are placed separately, not joined;
* ``vicuna``: the Vicuna v1.1 system line with ``USER: ... ASSISTANT:`` (Reflection-Tuning's default for IFD);
* ``chat``: the tokenizer's chat template with one user turn holding the joined text.

IFD and tuning both call :func:`prompt_text`, so with the same template IFD scores exactly the prompt that tuning
trains on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SENTINEL = "\x00CONTENT\x00"
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
VICUNA_INPUT = VICUNA_SYSTEM + " USER: {instruction}\nInput:\n{input} ASSISTANT:"
VICUNA = VICUNA_SYSTEM + " USER: {instruction} ASSISTANT:"
_INSTRUCT_NAME = re.compile(r"instruct|chat|-it\b", re.IGNORECASE)


def has_input(input: str | None) -> bool:
    return bool(input and input.strip())


def join_instruction(instruction: str, input: str | None = "") -> str:
    """The instruction and its input as one text: ``instruction + "\\n" + input`` (see the module docstring)."""
    return f"{instruction}\n{input}" if has_input(input) else instruction


def chat_frame(tokenizer: Any) -> tuple[str, str]:
    """Text the chat template puts before and after a single user message (with the generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; use a plain "
                         "layout (alpaca, vicuna, official) for base models")
    text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    before, after = text.split(SENTINEL)
    return before, after


def chat_text(tokenizer: Any, content: str) -> str:
    """One user turn holding ``content``, ending with the assistant cue."""
    before, after = chat_frame(tokenizer)
    return before + content + after


def prompt_text(template: str, tokenizer: Any, instruction: str, input: str | None = "") -> str:
    """The text a model sees before its response under ``template`` (alpaca, vicuna or chat)."""
    if template == "alpaca":
        return (ALPACA_INPUT if has_input(input) else ALPACA).format(instruction=instruction, input=input)
    if template == "vicuna":
        return (VICUNA_INPUT if has_input(input) else VICUNA).format(instruction=instruction, input=input)
    if template == "chat":
        return chat_text(tokenizer, join_instruction(instruction, input))
    raise ValueError(f"unknown prompt template {template!r}; expected alpaca, vicuna or chat")


def adds_special_tokens(template: str) -> bool:
    """Plain templates take the tokenizer's special tokens (BOS); a chat template writes its own."""
    return template != "chat"


def prompt_ids(template: str, tokenizer: Any, instruction: str, input: str | None = "") -> list[int]:
    """Token ids of :func:`prompt_text`."""
    text = prompt_text(template, tokenizer, instruction, input)
    return tokenizer(text, add_special_tokens=adds_special_tokens(template))["input_ids"]


def pick_template(template: str, model: str, tokenizer: Any) -> str:
    """Resolve ``auto``: chat when the tokenizer has a chat template and the model is instruction-tuned (an
    instruct alias, or instruct/chat/-it in its name), else alpaca."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise ValueError(f"template 'chat' asked for, but model {model!r} has no chat template; use 'alpaca'")
    if template != "auto":
        return template
    from selectune.core.models import ALIASES

    alias = ALIASES.get(model)
    instruct = alias.kind == "causal-instruct" if alias else bool(_INSTRUCT_NAME.search(Path(model).name))
    return "chat" if has_chat and instruct else "alpaca"


def prompt_module(text: str, source: str, macros: dict[str, tuple[str, ...]]) -> Any:
    """A Jinja prompt template's module (strict: an undefined variable is an error), checked to define each macro
    of ``macros`` with exactly those arguments; a ValueError names ``source`` and what is wrong."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        module = env.from_string(text).module
    except jinja2.TemplateError as err:
        raise ValueError(f"{source}: not a valid Jinja template: {err}") from None
    for name, args in macros.items():
        macro = getattr(module, name, None)
        if macro is None or tuple(getattr(macro, "arguments", ())) != args:
            raise ValueError(f"{source}: needs a macro {name}({', '.join(args)}); found "
                             + (f"{name}({', '.join(macro.arguments)})" if macro is not None else "none"))
    return module


def read_prompt_file(path: str | Path) -> str:
    """A prompt file's text; a missing file is a ValueError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"prompt file {p}: no such file")
    return p.read_text(encoding="utf-8")


def load_prompt_file(path: str | Path, macros: dict[str, tuple[str, ...]]) -> Any:
    """:func:`prompt_module` of a prompt file (see :func:`read_prompt_file`)."""
    return prompt_module(read_prompt_file(path), str(path), macros)
