"""Selective Reflection-Tuning (arXiv 2402.10110): reflection prompts, tolerant reply parsers and the
student's keep-if-better gate.

Variants of one record: ``ori`` (Q, A); ``q`` (the reflected instruction Q* with the teacher's answer to it);
``a`` (Q with the reflected answer A*); ``qa`` (Q* whose answer was then reflected).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

VARIANTS = ("ori", "q", "a", "qa")
PLACEHOLDERS = ("<the new instruction>", "<the answer>")
_END = re.compile(r"\[\s*/?\s*end\s*\]", re.IGNORECASE)
_FENCE = re.compile(r"```|^[ \t]*~~~", re.MULTILINE)
_DECORATION_LINE = re.compile(r"\n[ \t#*_>=-]*\Z")


# --------------------------------------------------------------------------- prompts


@cache
def _template(kind: str) -> Any:
    from importlib.resources import files

    import jinja2

    if kind not in ("instruction", "response"):
        raise ValueError(f"unknown reflection prompt {kind!r}; expected 'instruction' or 'response'")
    text = (files("selectune") / "prompts" / f"reflect_{kind}.jinja").read_text(encoding="utf-8")
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


# --------------------------------------------------------------------------- parsers


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
              ) -> list[str]:
    """Text after each ``start`` marker up to the nearest stop marker or the end, cleaned."""
    out = []
    for m in start.finditer(text):
        if any(a <= m.start() < b for a, b in fences):
            continue
        ends = [e.start() for p in stops if (e := _find(p, text, m.end(), fences)) is not None]
        out.append(_clean(text[m.end(): min(ends, default=len(text))]))
    return out


def _pick(segments: list[str], what: str) -> tuple[str | None, str]:
    """The last usable segment (chatter may name a marker before the real one), else why none is."""
    usable = [s for s in segments if s and not _placeholder(s)]
    if usable:
        return usable[-1], "ok"
    return None, f"empty {what}" if not segments[-1] else f"{what} is the prompt's placeholder"


def _placeholder(segment: str) -> bool:
    low = segment.lower()
    return any(p in low for p in PLACEHOLDERS)


def _parse(text: str, want_instruction: bool) -> Parsed:
    raw = text if isinstance(text, str) else ""
    fail = lambda reason: Parsed(False, None, None, reason, raw)  # noqa: E731
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
        instruction, reason = _pick(found, "instruction")
        if instruction is None:
            return fail(reason)
    found = _segments(raw, answer_start, [_END], fences)
    if not found:
        return fail(f"no {answer_label} marker")
    answer, reason = _pick(found, "answer")
    if answer is None:
        return fail(reason)
    return Parsed(True, instruction, answer, "ok", raw)


def parse_instruction_reflection(text: str) -> Parsed:
    """Read ``[New Instruction] ... [End]`` and ``[New Answer] ... [End]`` from a teacher reply.

    Tolerates case, markdown bold/headers around markers, ``Label:`` forms at a line start, chatter before and
    after, code blocks in the answer (markers inside them are ignored) and a missing final ``[End]``.
    """
    return _parse(text, want_instruction=True)


def parse_response_reflection(text: str) -> Parsed:
    """Read ``[Better Answer] ... [End]`` (``[New Answer]`` also accepted) from a teacher reply."""
    return _parse(text, want_instruction=False)


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Decision:
    """The chosen variant, whether it enters the recycled set, and the rule's reasoning."""

    variant: str
    kept: bool
    reason: str


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _stats(stats: Mapping[str, Any] | Any) -> dict[str, tuple[float, float]]:
    """{variant: (ifd, rifd)} from a dict of pairs or a row with ``ifd.<v>`` / ``rifd.<v>`` fields."""
    out: dict[str, tuple[float, float]] = {}
    for v in VARIANTS:
        if f"ifd.{v}" in stats or f"rifd.{v}" in stats:
            pair = (stats.get(f"ifd.{v}"), stats.get(f"rifd.{v}"))
        elif v in stats and stats[v] is not None:
            pair = tuple(stats[v])
        else:
            continue
        if _finite(pair[0]) and _finite(pair[1]):
            out[v] = (float(pair[0]), float(pair[1]))
    return out


def _why_missing(v: str, missing: Mapping[str, str] | None) -> str:
    return f"{v} unavailable ({missing[v]})" if missing and v in missing else f"{v} unavailable (no IFD/r-IFD)"


def gate(stats: Mapping[str, Any] | Any, cfg: Any, missing: Mapping[str, str] | None = None) -> Decision:
    """The official selection rule (``selection_code/get_select_data.py``), with absent variants handled.

    1. Instruction: keep Q* when IFD(q) > IFD(ori) -- a *higher* IFD means the student finds the new
       instruction more demanding (the paper keeps the harder, more informative instruction).
    2. Response: between the chosen pair P (q or ori) and its response-reflected version P' (qa or a),
       keep P' when r-IFD(P') < r-IFD(P) -- a *lower* reversed IFD means the answer is more predictive of
       its instruction. Ties keep the unreflected side at both steps (strict comparisons, as official).
    3. The chosen pair is kept only when IFD < ``cfg.ifd_max`` and r-IFD < ``cfg.rifd_max`` (both 1.0 as
       official), unless ``cfg.keep_regardless``. The official script only writes the qa/a branches
       (its q/ori appends are commented out); we keep every chosen pair that passes the thresholds.

    ``stats``: {variant: (ifd, rifd)} or a row with ``ifd.<v>``/``rifd.<v>``; NaN or absent = unavailable.
    ``missing``: why a variant is absent (parse failure, teacher error), quoted in the reason.
    """
    s = _stats(stats)
    steps: list[str] = []
    if "q" in s and "ori" in s and s["q"][0] > s["ori"][0]:
        base, reflected = "q", "qa"
        steps.append(f"IFD(q)={s['q'][0]:.4g} > IFD(ori)={s['ori'][0]:.4g}: reflected instruction kept")
    else:
        base, reflected = "ori", "a"
        if "q" in s and "ori" in s:
            steps.append(f"IFD(q)={s['q'][0]:.4g} <= IFD(ori)={s['ori'][0]:.4g}: original instruction kept")
        else:
            steps.append(_why_missing("q" if "q" not in s else "ori", missing) + ": original instruction kept")
    if reflected in s and base in s:
        if s[reflected][1] < s[base][1]:
            steps.append(f"r-IFD({reflected})={s[reflected][1]:.4g} < r-IFD({base})={s[base][1]:.4g}: "
                         "reflected answer kept")
            base = reflected
        else:
            steps.append(f"r-IFD({reflected})={s[reflected][1]:.4g} >= r-IFD({base})={s[base][1]:.4g}: "
                         "answer kept")
    else:
        steps.append(_why_missing(reflected if base in s else base, missing) + ": answer kept")
    if base not in s:
        kept = bool(cfg.keep_regardless)
        steps.append(f"no IFD/r-IFD for {base}: " + ("kept (keep_regardless)" if kept else "dropped"))
        return Decision(base, kept, "; ".join(steps))
    ifd, rifd = s[base]
    fails = [f"IFD {ifd:.4g} >= ifd_max {cfg.ifd_max:g}"] * (ifd >= cfg.ifd_max)
    fails += [f"r-IFD {rifd:.4g} >= rifd_max {cfg.rifd_max:g}"] * (rifd >= cfg.rifd_max)
    if not fails:
        steps.append(f"IFD {ifd:.4g} < {cfg.ifd_max:g} and r-IFD {rifd:.4g} < {cfg.rifd_max:g}: kept")
        return Decision(base, True, "; ".join(steps))
    steps.append(", ".join(fails) + (": kept (keep_regardless)" if cfg.keep_regardless else ": dropped"))
    return Decision(base, bool(cfg.keep_regardless), "; ".join(steps))
