"""The student's keep-if-better gate (Selective Reflection-Tuning, arXiv 2402.10110).

Variants of one record: ``ori`` (Q, A); ``q`` (the reflected instruction Q* with the teacher's answer to it);
``a`` (Q with the reflected answer A*); ``qa`` (Q* whose answer was then reflected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VARIANTS = ("ori", "q", "a", "qa")

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
       official), unless ``cfg.keep_regardless``. The official script only writes the qa/a branches (its q/ori
       appends are commented out): so does ``cfg.fidelity == "official"``; the selectune mode keeps every
       chosen pair that passes the thresholds.

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
    if getattr(cfg, "fidelity", "selectune") == "official" and base in ("ori", "q"):
        steps.append(f"{base} chosen: dropped (the official selection script writes only qa and a pairs)")
        return Decision(base, False, "; ".join(steps))
    ifd, rifd = s[base]
    fails = [f"IFD {ifd:.4g} >= ifd_max {cfg.ifd_max:g}"] * (ifd >= cfg.ifd_max)
    fails += [f"r-IFD {rifd:.4g} >= rifd_max {cfg.rifd_max:g}"] * (rifd >= cfg.rifd_max)
    if not fails:
        steps.append(f"IFD {ifd:.4g} < {cfg.ifd_max:g} and r-IFD {rifd:.4g} < {cfg.rifd_max:g}: kept")
        return Decision(base, True, "; ".join(steps))
    steps.append(", ".join(fails) + (": kept (keep_regardless)" if cfg.keep_regardless else ": dropped"))
    return Decision(base, bool(cfg.keep_regardless), "; ".join(steps))
