"""Speech benchmark: speaker-independent emotion recognition on EmoDB and RAVDESS, with the acoustic
encoder (librosa functionals + MLP; with and without per-speaker normalisation), the log-mel CNN, and
openSMILE's standard sets (ComParE_2016, eGeMAPSv02) with a linear classifier (``pip install mmemo[opensmile]``).

Protocol (no clip of a test speaker is ever trained on or selected on; the test speaker is evaluated
once, with the selected model):
- EmoDB, 5 speakers: leave one speaker out. RAVDESS, 2 actors: train on one, test on the other, and
  the reverse.
- Model selection, ``--validation train`` (default): every other speaker trains, and the epoch is
  selected on the training speakers' own clips (the first epoch at the best training UAR: stop once
  the training data is fit). ``--validation speaker`` (EmoDB): the next speaker in sorted order is held
  out of training to select the epoch by its UAR, and three speakers train.
- Per-speaker normalisation standardises each speaker's features with that speaker's own clips,
  labels unseen (the test speaker's too: transductive, as in the speech-emotion literature).
- A variant with a grid (``GRIDS``: the l2 loss term's weight in the openSMILE linear models) keeps its final epoch;
  each value is scored by leave one speaker out over the fold's training speakers alone (UAR of their
  summed confusion matrices), and the best is refitted on all of them. The choice depends on the test
  speaker's fold, not on the seed (a convex fit run to convergence), so it is made once, with the first
  seed, and reused. Where a fold has a single training speaker (RAVDESS), or with ``--fixed``, the
  config's value is used.
- Extraction time: the variant's features (``raw_features`` of its processor) for every clip, one after
  another on one thread, before the folds: seconds per clip of one core.
Figures: accuracy and UAR per fold, and overall from the confusion matrices summed over folds,
as mean ± std over seeds.

Enrolment protocol (``--enrolment``, EmoDB, issue 44): leave one speaker out, but the held-out speaker is
not normalised with all of their clips. The model is trained with per-speaker statistics of the training
speakers only and saved (its statistics go with it, ``processors.safetensors``); the held-out speaker's
clips are shuffled (by the seed) and the first k are enrolled, unlabelled, through
``EmotionRecognizer.enroll``: k = 0 (no enrolment: the global statistics), 5, 10, and all of their clips.
Every k is scored on the same clips, those after the first 10 of the shuffle, so the figures differ by
the enrolment alone. Beside it, the baseline: the same linear model trained without speaker normalisation
(a BatchNorm's global z-score instead), scored on the same clips.

    python scripts/bench/speech.py                                  # everything, seeds 0 1 2
    python scripts/bench/speech.py --datasets emodb --variants acoustic --seeds 0
    python scripts/bench/speech.py --variants opensmile_compare opensmile_egemaps
    python scripts/bench/speech.py --enrolment --datasets emodb --variants "acoustic+spk linear" \
        --out scripts/bench/results/speech_enrolment.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO, RESULTS, SHARED_DATA, fmt, mean_std, peak_rss_mb, write_json

from mmemo import load_config
from mmemo.data.examples import Splits
from mmemo.data.loading import apply_labels
from mmemo.data.readers.manifest import read_manifest
from mmemo.labels import get_label_set
from mmemo.models.encoders.opensmile import KEPT
from mmemo.registry import ENCODERS
from mmemo.training.trainer import Trainer

BENCH_CONFIGS = "scripts/bench/configs"
VARIANTS = {  # name -> (config, or dataset -> config, the first for any other dataset; overrides)
    "acoustic": (f"{BENCH_CONFIGS}/emodb/acoustic.yaml", ["model.encoders.audio.speaker_norm=false"]),
    "acoustic+spk": (f"{BENCH_CONFIGS}/emodb/acoustic.yaml", ["model.encoders.audio.speaker_norm=true"]),
    "acoustic+spk linear": (f"{BENCH_CONFIGS}/emodb/acoustic_linear.yaml", []),
    "logmel_cnn": (f"{BENCH_CONFIGS}/emodb/logmel_cnn.yaml", []),
    "opensmile_compare": ({"emodb": f"{BENCH_CONFIGS}/emodb/opensmile_compare_linear.yaml",
                           "ravdess": f"{BENCH_CONFIGS}/ravdess/opensmile_compare_linear.yaml"}, []),
    "opensmile_egemaps": ({"emodb": f"{BENCH_CONFIGS}/emodb/opensmile_egemaps_linear.yaml",
                           "ravdess": f"{BENCH_CONFIGS}/ravdess/opensmile_egemaps_linear.yaml"}, []),
}
# variant -> (override with {} for the value, values), chosen per fold by leave one speaker out over its training
# speakers (see above). The weights of the l2 loss term are scikit-learn's C of 0.001, 0.01, 0.1 and 1 for
# EmoDB's ~217 training clips (1 / (C n)).
L2_GRID = ("train.loss_terms=[{{name: l2, weight: {}}}]", [5.0, 0.5, 0.05, 0.005])
GRIDS = {"opensmile_compare": L2_GRID, "opensmile_egemaps": L2_GRID}
DATASETS = {  # name -> (folder, label set, manifest columns)
    "emodb": ("emodb", "emodb7", {"audio": "file", "label": "emotion", "speaker": "speaker"}),
    "ravdess": ("ravdess_speech", "ravdess8", {"audio": "file", "label": "emotion", "speaker": "actor"}),
}
# shared/ANCHORS.md: UAR of plain tools (EmoDB: leave-one-speaker-out over the same 5 speakers).
ANCHORS = {
    "emodb": {"chance": 14.3, "170 librosa functionals + RBF SVM, global z-score": 47.3,
              "same + logistic regression": 54.8, "per-speaker z-score + SVM": 61.5,
              "per-speaker z-score + logistic regression": 67.7,
              "openSMILE ComParE_2016, per-speaker z-score + linear SVM": 73.3,
              "openSMILE ComParE_2016 + logistic regression": 69.8, "openSMILE eGeMAPSv02, per-speaker z-score + linear SVM": 63.7},
    "ravdess": {"chance": 12.5, "train one actor, test the other (plain tools)": "14-27",
                "openSMILE ComParE_2016, per-speaker z-score + linear SVM": 40.6,
                "openSMILE ComParE_2016 + logistic regression": 39.1,
                "openSMILE eGeMAPSv02 + linear SVM": 29.7},
}


def config_path(variant: str, dataset: str) -> str:
    path = VARIANTS[variant][0]
    return path if isinstance(path, str) else path.get(dataset, next(iter(path.values())))


def extraction_seconds(config, examples) -> float | None:
    """Seconds of one thread per clip to compute the variant's features (its processor's ``raw_features``)
    from the file, or None for an encoder without such a step."""
    audio = config.model.encoders["audio"]
    processor = ENCODERS.get(audio.name).cls.build_processor(audio, config.data)
    if not hasattr(processor, "raw_features"):
        return None
    KEPT.clear()  # time the extraction itself, not openSMILE features kept from an earlier variant
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.process_time()
    for ex in examples:
        processor.raw_features(ex)
    torch.set_num_threads(threads)
    return round((time.process_time() - start) / len(examples), 4)


def uar_of(confusion: np.ndarray) -> float:
    support = confusion.sum(1)
    return float(100 * (np.diag(confusion)[support > 0] / support[support > 0]).mean())


def choose(override: str, values: list, config_for, examples, label_set, train_speakers: list[str], run_dir: Path) -> tuple:
    """The value (in ``override``'s ``{}``) with the best UAR (confusions summed) over leave one speaker out on
    ``train_speakers`` alone (the first of equals), and every value's UAR; ``config_for(*overrides)``."""
    scores = {}
    for value in values:
        total = sum(np.array(run_fold(config_for(override.format(value)), examples, label_set, held,
                                      [s for s in train_speakers if s != held], None,
                                      run_dir / f"value={value}" / f"held_{held}")["confusion"])
                    for held in train_speakers)
        scores[value] = round(uar_of(total), 2)
    return max(values, key=lambda v: scores[v]), scores


def folds(speakers: list[str], validation_speaker: bool) -> list[tuple[str, list[str], str | None]]:
    """(test speaker, training speakers, validation speaker or None) for each fold."""
    out = []
    for i, test in enumerate(speakers):
        val = speakers[(i + 1) % len(speakers)] if validation_speaker and len(speakers) > 2 else None
        out.append((test, [s for s in speakers if s not in (test, val)], val))
    return out


def run_fold(config, examples, label_set, test, train_speakers, val, run_dir: Path) -> dict:
    by = {"train": [e for e in examples if e.speaker in train_speakers], "test": [e for e in examples if e.speaker == test]}
    if val is not None:
        by["dev"] = [e for e in examples if e.speaker == val]
    config.train.select_on = "dev" if val is not None else "train"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = Trainer(config, run_dir=run_dir, splits=Splits(by), label_set=label_set).fit()
    assert not ({e.id for e in by["test"]} & {e.id for e in by["train"] + by.get("dev", [])})
    return {"test_speaker": test, "val_speaker": val, "train_speakers": train_speakers, "best_epoch": result.best_epoch,
            "accuracy": result.test["accuracy"], "uar": result.test["uar"], "n": result.test["n"],
            "confusion": result.test["confusion"]}


ENROL_KS = ("0", "5", "10", "all")
ENROL_SCORED_FROM = 10  # every k is scored on the held-out speaker's clips after the first 10 of the shuffle
NO_SPEAKER_NORM = ["model.encoders.audio.speaker_norm=false", "model.encoders.audio.batch_norm=true"]


def confusion_of(recognizer, examples, label_set, speaker: str | None) -> np.ndarray:
    """Confusion matrix of ``recognizer`` on ``examples``, each predicted as ``speaker``'s."""
    rows = [{"id": e.id, "audio": e.audio, "speaker": speaker} for e in examples]
    preds = recognizer.predict_batch(rows, batch_size=32, progress=False, num_threads=1)
    confusion = np.zeros((len(label_set), len(label_set)), dtype=int)
    for e, p in zip(examples, preds):
        confusion[label_set.index(e.label), label_set.index(p.label)] += 1
    return confusion


def enrolment_fold(make_config, examples, label_set, test: str, train_speakers: list[str], seed: int,
                   run_dir: Path) -> dict:
    """One held-out speaker: a model trained on ``train_speakers`` alone (their statistics only), then the
    confusion on the scored clips for each k, and for the model trained without speaker normalisation."""
    from mmemo.inference import EmotionRecognizer

    held = [e for e in examples if e.speaker == test]
    order = np.random.default_rng(seed).permutation(len(held))
    shuffled = [held[i] for i in order]
    scored = shuffled[ENROL_SCORED_FROM:]
    out: dict = {"test_speaker": test, "train_speakers": train_speakers, "n_scored": len(scored), "confusion": {}}
    for name, extra in (("spk", []), ("baseline", NO_SPEAKER_NORM)):
        config = make_config(seed, *extra)
        config.train.select_on = "train"
        folder = run_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            Trainer(config, run_dir=folder, splits=Splits({"train": [e for e in examples if e.speaker in train_speakers]}),
                    label_set=label_set).fit()
        recognizer = EmotionRecognizer.from_pretrained(folder, device="cpu")
        with contextlib.redirect_stderr(open(folder / "predict.log", "w")):
            if name == "baseline":
                out["confusion"]["baseline"] = confusion_of(recognizer, scored, label_set, None).tolist()
                continue
            assert test not in recognizer.speakers  # the held-out speaker was never fitted
            for k in ENROL_KS:
                if k != "0":
                    recognizer.enroll(test, [e.audio for e in (shuffled if k == "all" else shuffled[:int(k)])])
                out["confusion"][k] = confusion_of(recognizer, scored, label_set, test).tolist()
    return out


def run_enrolment(args, make_config_for, examples, label_set, speakers: list[str], dataset: str, variant: str) -> dict:
    """The enrolment protocol for one dataset and variant: UAR per k (and the baseline) over seeds."""
    per_seed = []
    start = time.time()
    for seed in args.seeds:
        folds_out = [enrolment_fold(make_config_for, examples, label_set, test, train_speakers, seed,
                                    Path(args.runs) / dataset / variant / "enrolment" / f"seed{seed}" / f"test_{test}")
                     for test, train_speakers, _ in folds(speakers, False)]
        overall = {k: pooled(np.sum([np.array(f["confusion"][k]) for f in folds_out], axis=0))
                   for k in (*ENROL_KS, "baseline")}
        per_seed.append({"seed": seed, "folds": folds_out, "overall": overall})
        print(f"{dataset} {variant} enrolment seed {seed}: UAR " + "  ".join(
            f"k={k} {overall[k]['uar']:.1f}" for k in ENROL_KS) + f"  no speaker norm {overall['baseline']['uar']:.1f}",
            flush=True)
    summary = {k: {m: mean_std([s["overall"][k][m] for s in per_seed]) for m in ("uar", "accuracy")}
               for k in (*ENROL_KS, "baseline")}
    summary["per_fold_uar"] = {
        f["test_speaker"]: {k: mean_std([uar_of(np.array(s["folds"][i]["confusion"][k])) for s in per_seed])
                            for k in (*ENROL_KS, "baseline")}
        for i, f in enumerate(per_seed[0]["folds"])}
    summary["minutes"] = round((time.time() - start) / 60, 1)
    return {"protocol": "enrolment", "ks": list(ENROL_KS), "scored_from": ENROL_SCORED_FROM,
            "baseline_overrides": NO_SPEAKER_NORM, "seeds": per_seed, "summary": summary}


def print_enrolment(dataset: str, variant: str, r: dict) -> None:
    s = r["summary"]
    print(f"{dataset} {variant}, enrolment: UAR (accuracy) on the clips after the first {r['scored_from']} of each "
          "held-out speaker, mean ± std over seeds")
    for k in ENROL_KS:
        print(f"  k = {k:<4} {fmt(s[k]['uar'], 2):>14} ({fmt(s[k]['accuracy'])})")
    print(f"  baseline, trained without speaker normalisation: {fmt(s['baseline']['uar'], 2)} "
          f"({fmt(s['baseline']['accuracy'])})")
    gap = s["all"]["uar"]["mean"] - s["10"]["uar"]["mean"]
    print(f"  goals: k = 10 within 2 points of all ({gap:+.2f} below); k = 0 no worse than the baseline "
          f"({s['0']['uar']['mean'] - s['baseline']['uar']['mean']:+.2f})")
    print("  per held-out speaker (UAR): " + "; ".join(
        f"{sp}: " + ", ".join(f"{k} {v['mean']:.1f}" for k, v in by_k.items()) for sp, by_k in s["per_fold_uar"].items()))


def pooled(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and UAR of the predictions of all folds together."""
    support = confusion.sum(1)
    recall = np.diag(confusion)[support > 0] / support[support > 0]
    return {"accuracy": round(100 * np.trace(confusion) / confusion.sum(), 2), "uar": round(100 * recall.mean(), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder holding emodb/ and ravdess_speech/")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "speech"))
    parser.add_argument("--out", default=str(RESULTS / "speech.json"))
    parser.add_argument("--validation", choices=["train", "speaker"], default="train",
                        help="select the epoch on the training speakers' clips, or on a held-out speaker")
    parser.add_argument("--fixed", action="store_true",
                        help="use the configs' own values instead of choosing from GRIDS on the training speakers")
    parser.add_argument("--enrolment", action="store_true",
                        help="the enrolment protocol (issue 44): the held-out speaker enrolled with k = 0, 5, 10, all clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides for every run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results: dict = {}
    for dataset in args.datasets:
        folder, label_set_name, columns = DATASETS[dataset]
        manifest = Path(args.data) / folder / "labels.csv"
        label_set = get_label_set(label_set_name)
        examples = apply_labels(read_manifest(manifest, columns=columns)["train"], label_set, {}, dataset)
        speakers = sorted({e.speaker for e in examples})
        for variant in args.variants:
            path = config_path(variant, dataset)
            overrides = VARIANTS[variant][1]
            data_overrides = [f"data.label_set={label_set_name}", f"data.path={manifest}",
                              f"data.columns={columns}", "data.split_column=null",
                              "data.splits={}", "train.progress=false", "train.eval_test=true"]

            def make_config(seed: int, *extra: str, path=path, overrides=overrides, data_overrides=data_overrides):
                return load_config(REPO / path, [*data_overrides, *overrides, f"train.seed={seed}", *args.overrides, *extra])

            if args.enrolment:
                result = run_enrolment(args, make_config, examples, label_set, speakers, dataset, variant)
                results.setdefault(dataset, {})[variant] = {"config": path, "overrides": overrides, **result}
                continue
            seconds = extraction_seconds(make_config(args.seeds[0]), examples)
            if seconds is not None:
                print(f"{dataset} {variant}: extraction {seconds:.3f} s per clip (one thread)", flush=True)
            per_seed, start, chosen = [], time.time(), {}
            for seed in args.seeds:
                fold_results = []
                for test, train_speakers, val in folds(speakers, args.validation == "speaker"):
                    extra: list[str] = []
                    if variant in GRIDS and not args.fixed and val is None and len(train_speakers) > 1:
                        override, values = GRIDS[variant]
                        if test not in chosen:  # once per fold, with the first seed
                            chosen[test] = choose(override, values, functools.partial(make_config, args.seeds[0]),
                                                  examples, label_set, train_speakers,
                                                  Path(args.runs) / dataset / variant / "inner" / f"test_{test}")
                            print(f"{dataset} {variant} test {test}: {override.format('_')} chosen on {train_speakers}: "
                                  f"{chosen[test][0]} (inner UAR {chosen[test][1]})", flush=True)
                        extra = [override.format(chosen[test][0])]
                    config = make_config(seed, *extra)
                    run_dir = Path(args.runs) / dataset / variant / f"seed{seed}" / f"test_{test}"
                    fold_results.append(run_fold(config, examples, label_set, test, train_speakers, val, run_dir)
                                        | {"overrides": extra})
                total = np.sum([np.array(f["confusion"]) for f in fold_results], axis=0)
                per_seed.append({"seed": seed, "folds": fold_results, "overall": pooled(total)})
                print(f"{dataset} {variant} seed {seed}: " + "  ".join(
                    f"{f['test_speaker']} {f['uar']:.1f}" for f in fold_results) +
                    f"  overall UAR {per_seed[-1]['overall']['uar']:.1f}", flush=True)
            summary = {k: mean_std([s["overall"][k] for s in per_seed]) for k in ("accuracy", "uar")}
            summary["per_fold"] = {
                f["test_speaker"]: {k: mean_std([s["folds"][i][k] for s in per_seed]) for k in ("accuracy", "uar")}
                for i, f in enumerate(per_seed[0]["folds"])}
            summary["minutes"] = round((time.time() - start) / 60, 1)
            summary["extraction_s_per_clip"] = seconds
            results.setdefault(dataset, {})[variant] = {
                "config": path, "overrides": overrides, "seeds": per_seed, "summary": summary,
                "chosen": {test: {"value": value, "inner_uar": {str(k): v for k, v in scores.items()}}
                           for test, (value, scores) in chosen.items()}}

    print()
    for dataset, by_variant in results.items():
        if args.enrolment:
            for variant, r in by_variant.items():
                print_enrolment(dataset, variant, r)
            print("anchors (UAR, shared/ANCHORS.md): " + "; ".join(f"{k} {v}" for k, v in ANCHORS[dataset].items()))
            continue
        speakers = list(next(iter(by_variant.values()))["summary"]["per_fold"])
        print(f"{dataset}: test speaker -> accuracy / UAR (mean ± std over seeds {args.seeds})")
        print(f"{'variant':<20}" + "".join(f"{s:>15}" for s in speakers) + f"{'overall':>15}{'min':>6}")
        for variant, r in by_variant.items():
            s = r["summary"]
            print(f"{variant:<20}" + "".join(f"{fmt(s['per_fold'][sp]['uar']):>15}" for sp in speakers)
                  + f"{fmt(s['uar']):>15}{s['minutes']:>6.1f}   UAR")
            print(f"{'':<20}" + "".join(f"{fmt(s['per_fold'][sp]['accuracy']):>15}" for sp in speakers)
                  + f"{fmt(s['accuracy']):>15}{'':>6}   accuracy")
            if s.get("extraction_s_per_clip") is not None:
                print(f"{'':<20}extraction {s['extraction_s_per_clip']:.3f} s per clip (one thread)"
                      + "".join(f"; test {t}: chosen {c['value']}" for t, c in r["chosen"].items()))
        print("anchors (UAR, shared/ANCHORS.md): " + "; ".join(f"{k} {v}" for k, v in ANCHORS[dataset].items()))
        print()
    path = write_json(args.out, {"benchmark": "speech" + (" enrolment" if args.enrolment else ""),
                                 "validation": args.validation, "seeds": args.seeds,
                                 "fixed": args.fixed, "overrides": args.overrides,
                                 "results": results, "anchors_uar": ANCHORS, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
