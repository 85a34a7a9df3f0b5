"""Tolerant, pure parsers of the teacher's replies: the text between the markers, or the reason there is none. A
failure keeps the raw reply. A reply cut off by the token limit, or whose answer has no closing ``[End]``, is a
failure with reason ``truncated``: a rewrite that stops mid-way never enters the data."""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDERS = ("<the new instruction>", "<the answer>")
_END = re.compile(r"\[\s*/?\s*end\s*\]", re.IGNORECASE)
_FENCE = re.compile(r"```|^[ \t]*~~~", re.MULTILINE)
_DECORATION_LINE = re.compile(r"\n[ \t#*_>=-]*\Z")

@dataclass(frozen=True)
class Parsed:
    """A parsed teacher reply; on failure ``ok`` is False, ``reason`` says why and ``raw`` keeps the text."""

    ok: bool
    instruction: str | None
    answer: str | None
    reason: str
    raw: str


def _start(label: str) -> re.Pattern[str]:
    """``[Label]`` anywhere (with markdown bold/colon around it) or ``Label:`` at a line start."""
    words = r"\s+".join(label.split())
    return re.compile(rf"(?:\[\s*{words}\s*\]|^[ \t#>*_]*{words}[ \t*_]*:)[ \t*_]*:?", re.IGNORECASE | re.MULTILINE)


_NEW_INSTRUCTION = _start("new instruction")
_NEW_ANSWER = _start("new answer")
_BETTER_ANSWER = re.compile(f"{_start('better answer').pattern}|{_NEW_ANSWER.pattern}", re.IGNORECASE | re.MULTILINE)


def _fences(text: str) -> list[tuple[int, int]]:
    """Spans of fenced code blocks (an unclosed fence runs to the end)."""
    marks = [m.start() for m in _FENCE.finditer(text)]
    if len(marks) % 2:
        marks.append(len(text))
    return list(zip(marks[::2], marks[1::2], strict=True))


def _find(pattern: re.Pattern[str], text: str, start: int, fences: list[tuple[int, int]]) -> re.Match[str] | None:
    """First match at or after ``start`` that is not inside a fenced code block."""
    for m in pattern.finditer(text, start):
        if not any(a <= m.start() < b for a, b in fences):
            return m
    return None


def _clean(segment: str) -> str:
    """Strip whitespace and stray markdown decoration left around the markers."""
    text = segment.strip()
    while True:
        before = text
        text = _DECORATION_LINE.sub("", text).strip()
        for token in ("**", "__"):
            if text.count(token) % 2:
                if text.startswith(token):
                    text = text[len(token):].strip()
                elif text.endswith(token):
                    text = text[: -len(token)].strip()
        text = text.lstrip(":").strip()
        if text == before:
            return text


def _segments(text: str, start: re.Pattern[str], stops: list[re.Pattern[str]], fences: list[tuple[int, int]],
              ) -> list[tuple[str, bool]]:
    """(text, closed) after each ``start`` marker up to the nearest stop marker (closed) or the end, cleaned."""
    out = []
    for m in start.finditer(text):
        if any(a <= m.start() < b for a, b in fences):
            continue
        ends = [e.start() for p in stops if (e := _find(p, text, m.end(), fences)) is not None]
        out.append((_clean(text[m.end(): min(ends, default=len(text))]), bool(ends)))
    return out


def _pick(segments: list[tuple[str, bool]], what: str) -> tuple[tuple[str, bool] | None, str]:
    """The last usable segment (chatter may name a marker before the real one), else why none is."""
    usable = [s for s in segments if s[0] and not _placeholder(s[0])]
    if usable:
        return usable[-1], "ok"
    return None, f"empty {what}" if not segments[-1][0] else f"{what} is the prompt's placeholder"


def _placeholder(segment: str) -> bool:
    low = segment.lower()
    return any(p in low for p in PLACEHOLDERS)


def _parse(text: str, want_instruction: bool, finish_reason: str = "") -> Parsed:
    raw = text if isinstance(text, str) else ""
    fail = lambda reason: Parsed(False, None, None, reason, raw)  # noqa: E731
    if finish_reason == "length":
        return fail("truncated: the reply hit the token limit")
    if not raw.strip():
        return fail("empty reply")
    fences = _fences(raw)
    answer_start = _NEW_ANSWER if want_instruction else _BETTER_ANSWER
    answer_label = "[New Answer]" if want_instruction else "[Better Answer]"
    if _find(answer_start, raw, 0, fences) is None and _find(answer_start, raw, 0, []) is not None:
        fences = []  # the whole reply sits in a code block: read the markers inside it
    instruction = None
    if want_instruction:
        found = _segments(raw, _NEW_INSTRUCTION, [_END, _NEW_ANSWER], fences)
        if not found:
            return fail("no [New Instruction] marker")
        picked, reason = _pick(found, "instruction")
        if picked is None:
            return fail(reason)
        instruction = picked[0]
    found = _segments(raw, answer_start, [_END], fences)
    if not found:
        return fail(f"no {answer_label} marker")
    answer, reason = _pick(found, "answer")
    if answer is None:
        return fail(reason)
    if not answer[1]:
        return fail("truncated: no [End] after the answer")
    return Parsed(True, instruction, answer[0], "ok", raw)


def parse_instruction_reflection(text: str, finish_reason: str = "") -> Parsed:
    """Read ``[New Instruction] ... [End]`` and ``[New Answer] ... [End]`` from a teacher reply.

    Tolerates case, markdown bold/headers around markers, ``Label:`` forms at a line start, chatter before and
    after, and code blocks in the answer (markers inside them are ignored). ``finish_reason`` "length" (the
    token limit cut the reply) or an answer without its ``[End]`` fails with reason ``truncated``.
    """
    return _parse(text, want_instruction=True, finish_reason=finish_reason)


def parse_response_reflection(text: str, finish_reason: str = "") -> Parsed:
    """Read ``[Better Answer] ... [End]`` (``[New Answer]`` also accepted) from a teacher reply; truncated replies
    fail as in :func:`parse_instruction_reflection`."""
    return _parse(text, want_instruction=False, finish_reason=finish_reason)
