"""The batching helpers of the last-token engine (the engine itself is tested through SelectIT rating, the judge
and IFD)."""

from __future__ import annotations

from selectune.core import lm


def test_length_batches_respect_limits() -> None:
    lengths = [5, 50, 7, 49, 3, 30, 31, 6]
    batches = lm.length_batches(lengths, batch_size=3, max_batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and max(lengths[i] for i in b) * len(b) <= 100
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    assert batches[0] == [1, 3]  # 50 and 49 fill the token budget together


def test_common_prefix_len_leaves_a_token() -> None:
    assert lm.common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert lm.common_prefix_len([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert lm.common_prefix_len([[9], [1]]) == 0


def test_pad_left_positions_count_real_tokens() -> None:
    ids, mask, positions = lm.pad_left([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
