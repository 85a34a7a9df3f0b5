"""Agreement of selectune's quality scores with human judgements (held-out Tulu human evaluation).

Run from the repository root::

    .venv/bin/python bench/judge_agreement.py --instances 120 \
        [--judge models:/selectune-judge/1 --judge smollm2-135m-instruct] [--rater gemma-3-270m] [--json out.json]

Data: ``../shared/data/heldout/tulu_human_eval_annotations.xlsx`` (outside the repo): per annotation, a prompt,
two model completions, whether each is acceptable (yes/no) and a preference (a/b better, slightly better,
tie). Held-out data: it is only read here to *report* agreement; nothing is trained, tuned or selected on it.

Each unique (prompt, completion) pair is scored reference-free (there are no gold answers) by:

- every ``--judge`` (a trained Self-J judge: adapter folder or ``models:/NAME/VERSION``; a plain model alias
  gives its untrained self-evaluation): expected value of the 0-9 rating, ``selectune.judge.infer.score_pairs``;
- every ``--rater``: its SelectIT sentence-level score (K = 5, the built-in rating prompts);
- the response length in characters (baseline).

Reported per scorer: AUROC for telling acceptable completions (majority of annotators) from the others,
Spearman correlation with the fraction of annotators who accepted, and pairwise accuracy on the annotations
that prefer one completion (ties left out; a score tie counts 1/2). The first ``--instances`` prompts (file
order) are used; both chance levels are 0.5.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from selectune.core.metrics import auroc
from selectune.data.records import record_id
from selectune.judge.metrics import correlations

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "heldout" / "tulu_human_eval_annotations.xlsx"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="Tulu human-evaluation annotations (.xlsx)")
    ap.add_argument("--instances", type=int, default=120, help="first N prompts (0 = all 332)")
    ap.add_argument("--judge", action="append", default=[], help="judge reference; repeat")
    ap.add_argument("--rater", action="append", default=[], help="SelectIT rater model; repeat")
    ap.add_argument("--max-length", type=int, default=1024, help="token limit of a judge prompt")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    return ap.parse_args()


def load_annotations(path: Path, instances: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs: one row per unique prompt+completion with acceptance counts, preferences: a/b ids per vote)."""
    ann = pd.read_excel(path)
    keep = ann["instance_id"].drop_duplicates().head(instances) if instances else ann["instance_id"].unique()
    ann = ann[ann["instance_id"].isin(set(keep))].reset_index(drop=True)
    votes = []
    for side in ("a", "b"):
        part = ann[["instance_id", "prompt", f"model_{side}", f"completion_{side}", f"completion_{side}_is_acceptable"]]
        part.columns = ["instance_id", "instruction", "model", "output", "acceptable"]
        votes.append(part.assign(side=side, vote=ann.index))
    long = pd.concat(votes, ignore_index=True)
    long[["instruction", "output"]] = long[["instruction", "output"]].fillna("").astype(str)  # a few are empty
    long["id"] = [record_id(q, "", a) for q, a in zip(long["instruction"], long["output"], strict=True)]
    long["yes"] = long["acceptable"].astype(str).str.lower().eq("yes")
    pairs = (long.groupby("id", sort=False)
             .agg(instruction=("instruction", "first"), output=("output", "first"), model=("model", "first"),
                  votes=("yes", "size"), accepted=("yes", "mean"))
             .reset_index())
    pairs["input"] = ""
    ids = long.pivot(index="vote", columns="side", values="id")
    pref = ann["preference"].astype(str)
    prefs = pd.DataFrame({"a": ids["a"], "b": ids["b"],
                          "winner": np.where(pref.str.startswith("a-"), "a", np.where(pref.str.startswith("b-"),
                                                                                      "b", "tie"))})
    return pairs, prefs[prefs["winner"] != "tie"].reset_index(drop=True)


def agreement(score: pd.Series, pairs: pd.DataFrame, prefs: pd.DataFrame) -> dict[str, float]:
    """AUROC vs majority acceptance, Spearman vs acceptance rate, pairwise accuracy on preferences."""
    s = score.to_numpy(dtype=float)
    majority = pairs["accepted"].to_numpy() > 0.5
    by_id = dict(zip(pairs["id"], s, strict=True))
    diff = np.array([by_id[a] - by_id[b] for a, b in zip(prefs["a"], prefs["b"], strict=True)])
    sign = np.where(prefs["winner"] == "a", 1.0, -1.0)
    pairwise = float(np.mean(np.where(diff == 0, 0.5, (diff * sign > 0).astype(float))))
    spearman = correlations(s, pairs["accepted"].to_numpy())[1]
    return {"auroc_acceptable": round(auroc(s, majority), 4), "spearman_acceptance": round(spearman, 4),
            "pairwise_accuracy": round(pairwise, 4)}


def judge_scores(ref: str, pairs: pd.DataFrame, max_length: int) -> pd.Series:
    from selectune.judge.infer import load_judge, score_pairs

    judge = load_judge(ref)
    judge.max_length = max_length
    return score_pairs(judge, pairs, with_reference=False)["judge_score"]


def rater_scores(model: str, pairs: pd.DataFrame) -> pd.Series:
    from selectune.config import SelectITConfig
    from selectune.selectit.rater import score_selectit

    report = score_selectit(pairs, SelectITConfig(models=[model]))
    return report.table["selectit_score"]


def main() -> None:
    args = parse_args()
    pairs, prefs = load_annotations(args.input, args.instances)
    print(f"{pairs['instruction'].nunique()} prompts, {len(pairs)} unique completions "
          f"({int((pairs['accepted'] > 0.5).sum())} acceptable by majority), {len(prefs)} non-tie preferences")
    scorers: dict[str, pd.Series] = {"length (chars)": pairs["output"].str.len().astype(float)}
    seconds: dict[str, float] = {}
    for ref in args.judge:
        start = time.perf_counter()
        scorers[f"judge {ref}"] = judge_scores(ref, pairs, args.max_length).reset_index(drop=True)
        seconds[f"judge {ref}"] = round(time.perf_counter() - start, 1)
    for model in args.rater:
        start = time.perf_counter()
        scorers[f"selectit {model}"] = rater_scores(model, pairs).reset_index(drop=True)
        seconds[f"selectit {model}"] = round(time.perf_counter() - start, 1)
    results = {name: {**agreement(s, pairs, prefs), "seconds": seconds.get(name)} for name, s in scorers.items()}
    print("| scorer | AUROC acceptable | Spearman acceptance | pairwise accuracy | seconds |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['auroc_acceptable']:.3f} | {r['spearman_acceptance']:.3f} | "
              f"{r['pairwise_accuracy']:.3f} | {r['seconds'] if r['seconds'] is not None else '-'} |")
    if args.json:
        args.json.write_text(json.dumps({"prompts": int(pairs["instruction"].nunique()), "completions": len(pairs),
                                         "preferences": len(prefs), "results": results}, indent=2))


if __name__ == "__main__":
    main()
