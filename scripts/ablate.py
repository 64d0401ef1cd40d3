"""Every modality combination x fusion x seed from one config, as one table (results.md, results.csv, results.png).

    python scripts/ablate.py configs/meld/text_audio_vision.yaml --fusion concat,late,tensor --seeds 0,1,2
    python scripts/ablate.py configs/meld/text_audio_vision.yaml model.encoders.text.freeze=true   # cached text embeddings

The same as `mmemo ablate`; rerun the same command to resume an interrupted sweep.
"""

from __future__ import annotations

import argparse

from mmemo.ablation import ablate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    parser.add_argument("--modalities", default="all", help="'all' or e.g. text,audio,text+audio")
    parser.add_argument("--fusion", default=None, help="comma-separated fusion methods (default: the config's)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    parser.add_argument("--out", default=None, help="sweep folder (default: <output_dir>/ablation-<name>)")
    args = parser.parse_args()
    out = ablate(args.config, args.overrides, modalities=args.modalities,
                 fusions=args.fusion.split(",") if args.fusion else None,
                 seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None, out_dir=args.out)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
