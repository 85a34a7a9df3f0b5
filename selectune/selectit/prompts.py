"""SelectIT's rating prompts and the official prompt layout: prompt, Instruction:, Response:, the answer cue."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from selectune.core.prompts import join_instruction

Layout = Literal["official", "chat"]

# The project's own paraphrases of the rating instruction ({k} = the top rating); a file can replace them.
RATING_PROMPT_TEMPLATES = (
    "Rate how well the response below carries out the instruction, from 1 (poor) to {k} (excellent). "
    "Reply with the number only.",
    "On a scale of 1 to {k}, judge whether the response is a correct, complete and helpful answer to the "
    "instruction. Give a single digit.",
    "You are reviewing training data. Score the response to the instruction from 1 to {k}, where {k} means "
    "accurate and fully on task and 1 means wrong, off-topic or empty. Output only the score.",
    "Read the instruction and the response. How good is the response, from 1 (useless) to {k} (exemplary)? "
    "Answer with one number.",
    "Give the response a quality score between 1 and {k} for following the instruction accurately and "
    "helpfully. Write just the score.",
)


def official_prompt(rating_prompt: str, instruction: str, input: str, response: str) -> str:
    """The official layout: ``prompt + "\\n" + "Instruction:" + Q + "\\n" + "Response:" + A + "\\nThe answer is: \\n"``.

    The released scripts pass each prompt-file line with its own newline (readlines()), so a line that ends in
    one gives a blank line after the prompt: :func:`load_rating_prompts` with ``keep_newlines`` keeps it."""
    ins = join_instruction(instruction, input)
    return f"{rating_prompt}\nInstruction:{ins}\nResponse:{response}\nThe answer is: \n"


ANSWER_SUFFIX = "\nThe answer is: \n"


def default_rating_prompts(k: int = 5, keep_newlines: bool = False) -> list[str]:
    """The built-in prompts; with ``keep_newlines`` as a file of them would read in official mode."""
    prompts = [t.format(k=k) for t in RATING_PROMPT_TEMPLATES]
    return [p + "\n" for p in prompts[:-1]] + prompts[-1:] if keep_newlines else prompts


def choose_prompts(pool: list[str], num_prompts: int | None, sentence_level: bool = True, seed: int = 0,
                   source: str = "the built-in prompts") -> list[str]:
    """The first ``num_prompts`` of ``pool`` (all when None); without ``sentence_level`` one drawn at random."""
    if not sentence_level:
        import random

        return [random.Random(seed).choice(pool)]
    if num_prompts is not None and num_prompts > len(pool):
        raise ValueError(f"num_prompts {num_prompts}, but {source} has only {len(pool)} rating prompts")
    return pool[:num_prompts]


def load_rating_prompts(path: str | Path, keep_newlines: bool = False) -> list[str]:
    """One rating prompt per non-empty line, stripped; with ``keep_newlines`` every line exactly as the official
    scripts read it (``readlines()``: its newline kept, blank lines included)."""
    p = Path(path)
    if keep_newlines:
        with p.open(encoding="utf-8") as fh:
            prompts = fh.readlines()
    else:
        prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{p}: no rating prompts (expected one prompt per line)")
    return prompts


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
