"""The judge reads its rating from single digit tokens."""

from __future__ import annotations

import pytest

from selectune.judge.prompts import digit_ids


def test_digit_ids_are_single_tokens(tiny_model: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = digit_ids(tok)
    assert [tok.decode([i]) for i in ids] == list("0123456789")

    class NoSeven:
        name_or_path = "no-seven"

        def get_vocab(self) -> dict[str, int]:
            return {d: i for i, d in enumerate("012345689")}

    with pytest.raises(ValueError, match="no single token for the digit '7'"):
        digit_ids(NoSeven())
