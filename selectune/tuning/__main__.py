"""``python -m selectune.tuning``: train and save the adapter (no MLflow). Under torchrun / accelerate launch every
process runs this and rank 0 writes and prints: ``torchrun --nproc_per_node 4 -m selectune.tuning --data ...``."""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> None:
    from selectune.core.config import load_stage_config
    from selectune.tuning.config import TuneConfig
    from selectune.tuning.train import train

    ap = argparse.ArgumentParser(prog="python -m selectune.tuning", description="LoRA instruction tuning")
    ap.add_argument("--data", required=True, help="Selected records (Parquet or any supported data format)")
    ap.add_argument("--output", required=True, help="Output folder: adapter/, checkpoints/ [, merged/]")
    ap.add_argument("--base", default=None, help="Base model alias/folder/hub id (default: the config's)")
    ap.add_argument("--config", default=None, help="YAML: a pipeline recipe (its tune: section) or TuneConfig")
    ap.add_argument("--max-steps", type=int, default=None, help="Stop after N optimizer steps")
    a = ap.parse_args(argv)
    cfg = load_stage_config(TuneConfig, "tune", a.config, base=a.base, max_steps=a.max_steps)
    res = train(cfg, a.data, a.output)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"adapter": str(res.adapter_dir), **res.metrics}, indent=2))


if __name__ == "__main__":
    main()
