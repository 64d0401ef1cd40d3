"""Train one model from a YAML config, then report dev (selection) and test (once) metrics.

    python scripts/train.py configs/meld/text_audio.yaml                     # one modality combination
    python scripts/train.py configs/meld/text.yaml train.epochs=3 data.root=/data/MELD.Raw
    accelerate launch --multi_gpu --num_processes 4 scripts/train.py configs/meld/text_audio_vision.yaml
    python scripts/train.py --resume runs/meld-text_audio-20261128-120000    # continue from checkpoints/last

The seven configs in configs/meld/ (text, audio, vision, text_audio, text_vision, audio_vision,
text_audio_vision) differ only in their modalities; this script is all the code a run needs. Copy it and
change what you like.
"""

from __future__ import annotations

import argparse

from mmemo import load_config, train
from mmemo.training.metrics import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/meld/text_audio.yaml")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument("--resume", help="a run folder to continue")
    args = parser.parse_args()
    if args.resume:
        result = train(None, args.overrides, resume=args.resume)
    else:
        if args.config is None:
            parser.error("give a CONFIG or --resume RUN")
        result = train(load_config(args.config, args.overrides))

    labels = list(result.dev["per_class"])
    print(format_table(result.dev, labels, title=f"dev, best epoch {result.best_epoch} (selected on dev by {result.metric})"))
    if result.test:
        print(format_table(result.test, labels, title="test, reported once for the dev-selected model"))
    print(f"run folder: {result.run_dir}")


if __name__ == "__main__":
    main()
