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
    if "=" in Path(args.out_dir).parts[0]:  # out=DIR, as the Hydra commands take it
        parser.error(f"OUT_DIR is a plain path (e.g. /tmp/tiny), got {args.out_dir!r}")
    target = Path(args.out_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        parser.error(f"OUT_DIR must be empty or absent: {target}")
    if args.hidden_size < 1 or args.layers < 1:
        parser.error(
            f"--hidden-size and --layers must be >= 1, got {args.hidden_size}, {args.layers}"
        )
    if args.hidden_size % TinyConfig.num_attention_heads:
        parser.error(
            f"--hidden-size must be a multiple of the {TinyConfig.num_attention_heads} "
            f"attention heads, got {args.hidden_size}"
        )
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
