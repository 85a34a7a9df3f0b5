"""GGUF conversion: transformers' three metadata parses (config, weights, tokenizer) share one reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_a_gguf_file_is_parsed_once_and_read_the_same(tmp_path: Path) -> None:
    import gguf

    from selectune.core.models import _gguf_read_once

    path = tmp_path / "t.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])
    writer.add_uint32("llama.block_count", 2)
    writer.add_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    real = gguf.GGUFReader
    plain = real(path)
    with _gguf_read_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and isinstance(first, real)
        assert type(first.data) is np.ndarray  # not a memmap: no per-slice bookkeeping
        assert list(first.fields) == list(plain.fields)
        tokens = first.fields["tokenizer.ggml.tokens"]
        assert [bytes(tokens.parts[i]).decode() for i in tokens.data] == [f"tok{i}" for i in range(300)]
        assert first.fields["llama.block_count"].parts[-1][0] == 2
        np.testing.assert_array_equal(first.tensors[0].data, plain.tensors[0].data)
    assert gguf.GGUFReader is real


def test_the_cycle_collector_runs_only_for_a_model_that_survives_its_last_reference(monkeypatch) -> None:
    import gc
    import weakref

    from selectune.core import models

    class Model:  # stands in for a torch module
        pass

    calls: list[int] = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(1) or collect(*a))
    gc.disable()  # only the helper may collect here
    try:
        plain = Model()
        alive = weakref.ref(plain)
        del plain  # refcounting frees it: no full collection
        models.collect_if_alive(alive)
        assert alive() is None and calls == []
        cyclic = Model()
        cyclic.self = cyclic  # a reference cycle keeps it after del
        alive = weakref.ref(cyclic)
        del cyclic
        assert alive() is not None
        models.collect_if_alive(alive)
        assert alive() is None and calls == [1]
    finally:
        gc.enable()
