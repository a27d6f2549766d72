"""``python -m agents.tiny OUT_DIR --kind text|vlm [--arch llama|qwen2]``: build one tiny model.

A developer's tool with four flags, kept on argparse: it builds one
directory and has no config tree worth composing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.tiny.config import TinyConfig
from agents.tiny.models import build_tiny_model

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m agents.tiny", description="Build a tiny model offline."
    )
    parser.add_argument("out_dir", help="directory to write (must be empty or absent)")
    parser.add_argument("--kind", choices=["text", "vlm"], default="text")
    parser.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=TinyConfig.hidden_size)
    parser.add_argument("--layers", type=int, default=TinyConfig.num_hidden_layers)
    args = parser.parse_args(argv)
    out = build_tiny_model(
        args.out_dir,
        kind=args.kind,
        arch=args.arch,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
    )
    meta = json.loads((out / "tiny.json").read_text())
    print(f"built tiny {args.kind} model ({meta['parameters']:,} parameters) in {out}")
    return out


if __name__ == "__main__":
    main()
