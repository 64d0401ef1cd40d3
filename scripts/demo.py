"""The demo behind `make demo`: generate the embedded data, train text+audio+vision end-to-end,
print the dev metrics, and predict one held-back clip with the Python API."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmemo import EmotionRecognizer, load_config, train
from mmemo.data.demo import generate_demo_data
from mmemo.training.metrics import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", default="demo_data")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "train_sent_emo.csv").exists():
        print(f"writing demo data to {data}/ ...")
        generate_demo_data(data)
    config = load_config(args.config, [f"data.root={data}", *args.overrides])

    start = time.time()
    result = train(config)
    minutes = (time.time() - start) / 60
    labels = list(result.dev["per_class"])
    print()
    print(format_table(result.dev, labels, title=f"dev metrics, best epoch {result.best_epoch} of {config.train.epochs} "
                                                 f"(selected on dev by {result.metric}; trained in {minutes:.1f} min)"))
    if result.test:
        print(f"\ntest, reported once for the dev-selected model: weighted_f1 {result.test['weighted_f1']:.2f}  "
              f"accuracy {result.test['accuracy']:.2f}")

    held = json.loads((data / "heldout" / "heldout.json").read_text())[0]
    clip = data / "heldout" / held["video"]
    recognizer = EmotionRecognizer.from_pretrained(result.run_dir)
    pred = recognizer.predict(text=held["text"], video=str(clip))
    print(f"\nheld-back clip {clip} (text: {held['text']!r}, true label: {held['label']})")
    print(f"predicted: {pred.label}  using {', '.join(pred.modalities)}")
    for name, p in sorted(pred.probs.items(), key=lambda kv: -kv[1])[:3]:
        print(f"  {name:<9} {p:.3f}")
    print(f"\nrun folder: {result.run_dir}")


if __name__ == "__main__":
    main()
