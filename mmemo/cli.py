"""The ``mmemo`` command: train, adapt, evaluate, ablate, predict, enroll, timeline, inspect-vision, serve,
demo-data, models."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from mmemo.ablation import ablate
from mmemo.config import load_config
from mmemo.data.demo import DemoSpec, generate_demo_data, write_demo_recording
from mmemo.errors import ConfigError, MmemoError
from mmemo.inference import EmotionRecognizer
from mmemo.inference.inspect import inspect_vision
from mmemo.registry import ENCODERS, FUSIONS, LOSS_TERMS, READERS
from mmemo.serve import TOKEN_ENV, serve
from mmemo.training.adapt import adapt_text_encoder
from mmemo.training.evaluate import evaluate
from mmemo.training.metrics import format_table
from mmemo.training.trainer import train


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.config is not None and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        overrides, args.config = [args.config, *overrides], None  # `train --resume RUN key=value`: an override
    if args.resume:
        result = train(None, overrides, resume=args.resume)
    else:
        if args.config is None:
            raise ConfigError("mmemo train: give a CONFIG (YAML) or --resume RUN")
        result = train(args.config, overrides, run_dir=args.run_dir)
    labels = list(result.dev["per_class"]) if result.dev else []
    print(f"\nrun folder: {result.run_dir}")
    print(f"best epoch {result.best_epoch} by {result.metric} on dev")
    if result.dev:
        print(format_table(result.dev, labels, title="dev (selected checkpoint)"))
    if result.test:
        print(format_table(result.test, labels, title="test (reported once, for the dev-selected checkpoint)"))
    if result.media_issues:
        print(f"unusable media, marked absent: {result.media_issues} (see {result.run_dir / 'media_issues.csv'})")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected integers separated by commas, got {text!r}") from None


def _cmd_ablate(args: argparse.Namespace) -> int:
    fusions = [f.strip() for f in args.fusion.split(",") if f.strip()] if args.fusion else None
    seeds = _int_list(args.seeds) if args.seeds else None
    out = ablate(args.config, args.overrides, modalities=args.modalities, fusions=fusions, seeds=seeds, out_dir=args.out)
    print(f"\n{(out / 'results.md').read_text()}")
    print(f"ablation folder: {out} (results.csv, results.md, results.png, runs/)")
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    result = adapt_text_encoder(config, args.out, epochs=args.epochs, lr=args.lr, head_lr=args.head_lr,
                                batch_size=args.batch_size, mask_prob=args.mask_prob, seed=args.seed)
    print(f"adapted {result.source} on {result.examples} training inputs, {result.steps} steps in "
          f"{result.time_s / 60:.1f} min ({result.cpu_s / 60:.1f} CPU min); masked-LM loss by epoch {result.loss_by_epoch}")
    print(f"checkpoint folder: {result.out_dir} (train with model.encoders.text.checkpoint={result.out_dir})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    evaluate(args.run, args.split, batch_size=args.batch_size)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    recognizer = EmotionRecognizer.from_pretrained(args.run, device=args.device, allow_pickle=args.allow_pickle)
    if args.enrollments:
        recognizer.load_enrollments(args.enrollments)
    if args.manifest:
        bad = [c for c in args.column if "=" not in c]
        if bad:
            raise ConfigError(f"--column {bad[0]!r}: expected FIELD=COLUMN, e.g. audio=file")
        columns = dict(c.split("=", 1) for c in args.column)
        preds = recognizer.predict_batch(args.manifest, batch_size=args.batch_size, num_workers=args.num_workers,
                                         num_threads=args.num_threads, columns=columns)
        out = open(args.out, "w", newline="") if args.out else sys.stdout
        try:
            if args.json:
                for pred in preds:
                    out.write(json.dumps(pred.to_dict()) + "\n")
            else:
                write_predictions_csv(preds, out, recognizer.labels, recognizer.modalities)
        finally:
            if args.out:
                out.close()
        failed = sum(p.error is not None for p in preds)
        where = f" to {args.out}" if args.out else ""
        print(f"{len(preds)} predictions written{where}; {failed} without a usable input", file=sys.stderr)
        return 0
    logger = logging.getLogger("mmemo")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the output below carries the warnings
    try:
        pred = recognizer.predict(text=args.text, audio=args.audio, video=args.video, image=args.image,
                                  context=args.context or None, speaker=args.speaker)
    finally:
        logger.setLevel(level)  # main() may run in a caller's process
    print(json.dumps(pred.to_dict(), indent=2) if args.json else format_prediction(pred))
    return 0


def format_prediction(pred) -> str:
    """A prediction as a readable table: probabilities with bars, then each modality's contribution."""
    lines = [f"prediction: {pred.label}   (from {', '.join(pred.modalities)})", ""]
    width = max(len(k) for k in pred.probs)
    for name, p in sorted(pred.probs.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<{width}}  {p:6.3f}  {'#' * int(round(p * 40))}")
    if pred.contributions:
        lines += ["", f"contribution to p({pred.label}): p with every input minus p without that modality"]
        lines += [f"  {m:<{width}}  {c:+6.3f}" for m, c in pred.contributions.items()]
    lines += [f"warning: {w}" for w in pred.warnings]
    return "\n".join(lines)


def write_predictions_csv(preds, out, labels: list[str], modalities: list[str]) -> None:
    """One row per input: id, label, a probability per class, modalities used, contributions, warnings."""
    writer = csv.writer(out)
    writer.writerow(["id", "label", *(f"p_{c}" for c in labels), "modalities", *(f"contribution_{m}" for m in modalities),
                     "warnings", "error"])
    for p in preds:
        writer.writerow([p.id, p.label or "", *(f"{p.probs[c]:.6f}" if p.probs else "" for c in labels),
                         "+".join(p.modalities),
                         *(f"{p.contributions[m]:+.6f}" if m in p.contributions else "" for m in modalities),
                         " | ".join(p.warnings), p.error or ""])


def _cmd_enroll(args: argparse.Namespace) -> int:
    recognizer = EmotionRecognizer.from_pretrained(args.model, device="cpu")
    if args.enrollments:
        recognizer.load_enrollments(args.enrollments)
    result = recognizer.enroll(args.speaker, args.clips)
    if args.out:
        where = recognizer.save_enrollments(args.out)
    else:
        if recognizer.model_dir is None or not Path(args.model).exists():
            raise ConfigError(f"mmemo enroll: {args.model} is not a local model folder; write the enrolment to a file "
                              "of its own with --out FILE")
        where = recognizer.save_fitted()
    skipped = f"; {len(result.skipped)} skipped: " + "; ".join(result.skipped) if result.skipped else ""
    print(f"enrolled {result.speaker!r} from {result.used} clip(s){skipped}\nwritten to {where}")
    return 0


def _cmd_timeline(args: argparse.Namespace) -> int:
    recognizer = EmotionRecognizer.from_pretrained(args.model, device=args.device, allow_pickle=args.allow_pickle)
    if args.enrollments:
        recognizer.load_enrollments(args.enrollments)
    logger = logging.getLogger("mmemo")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the summary below carries the warnings
    try:
        timeline = recognizer.predict_timeline(args.recording, window=args.window, hop=args.hop, segments=args.segments,
                                               transcript=args.transcript, speaker=args.speaker,
                                               batch_size=args.batch_size, progress=not args.no_progress)
    finally:
        logger.setLevel(level)
    if args.json:
        if args.out:
            timeline.write_json(args.out)
        else:
            sys.stdout.write(json.dumps(timeline.to_dict(), indent=1) + "\n")
    elif args.out:
        timeline.write_csv(args.out)
    else:
        timeline.write_csv(sys.stdout)
    if args.plot:
        timeline.plot(args.plot)
    row_notes = sorted({w for r in timeline.rows for w in r.warnings})
    for w in timeline.warnings + row_notes:
        print(f"warning: {w}", file=sys.stderr)
    failed = sum(r.error is not None for r in timeline.rows)
    where = " and ".join(str(p) for p in (args.out, args.plot) if p) or "stdout"
    print(f"{len(timeline.rows)} rows over {timeline.seconds:.1f} s written to {where}"
          + (f"; {failed} without a usable input" if failed else ""), file=sys.stderr)
    return 0


def _cmd_inspect_vision(args: argparse.Namespace) -> int:
    v = inspect_vision(args.run_or_config, args.clip, args.out, args.overrides, audio=args.audio)
    found = [len(boxes) for boxes in v.detections]
    if v.detections:
        print(f"faces found per sampled frame: {found}; tracks shown to the encoder: {len(v.chosen)}")
    for note in v.notes:
        print(note)
    shown = "nothing (vision would be marked absent)" if v.shown is None else f"{len(v.shown)} frame(s) of {v.shown.shape[-1]} px"
    print(f"the encoder is shown {shown}; contact sheet: {args.out}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    serve(args.model, host=args.host, port=args.port, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
          token=args.token, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
          max_upload_mb=args.max_upload_mb, max_batch_inputs=args.max_batch_inputs, timeout_s=args.timeout,
          tmp_dir=args.tmp_dir, threads=args.threads, log_level="debug" if args.verbose else "info")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    spec = DemoSpec(n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, seed=args.seed)
    root = generate_demo_data(args.dir, spec)
    print(f"demo data written to {root}")
    if args.recording:
        wav, csv = write_demo_recording(root, args.recording)
        print(f"a {args.recording:g}-minute recording written to {wav}, its transcript to {csv}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    for title, registry in (("encoders", ENCODERS), ("fusions", FUSIONS), ("readers (data.source)", READERS),
                            ("loss terms (train.loss_terms)", LOSS_TERMS)):
        print(f"{title}:")
        for e in registry.entries():
            print(f"  {e.name:<16} {e.modality or '':<7} {textwrap.shorten(e.description, 100, placeholder=' ...')}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=3")
    p.add_argument("--run-dir", help="run folder (default: <output_dir>/<name>-<timestamp>)")
    p.add_argument("--resume", help="continue the run in this folder from checkpoints/last")


def _ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/meld/text_audio_vision.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every run")
    p.add_argument("--modalities", default="all",
                   help="'all' (every non-empty subset of the config's modalities) or e.g. text,audio,text+audio")
    p.add_argument("--fusion", help="fusion methods, comma-separated, e.g. concat,late,tensor (default: the config's)")
    p.add_argument("--seeds", help="seeds, comma-separated, e.g. 0,1,2 (default: the config's train.seed)")
    p.add_argument("--out", help="sweep folder (default: <output_dir>/ablation-<name>); rerun to resume")


def _adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config whose data and text encoder are adapted, e.g. configs/meld/text_best.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--out", required=True, help="folder for the adapted checkpoint")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5, help="the encoder's learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3, help="the masked-LM head's learning rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (or saved model folder)")
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--batch-size", type=int)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, saved model folder or Hugging Face Hub repo id")
    p.add_argument("--text")
    p.add_argument("--audio", help="audio file (or a video file: its audio track)")
    p.add_argument("--video", help="video file; its audio track is the audio input unless --audio is given")
    p.add_argument("--image")
    p.add_argument("--context", nargs="*", default=[], help="earlier turns of the dialogue, oldest first")
    p.add_argument("--speaker", help="the speaker, for per-speaker statistics (enrolled with `mmemo enroll`)")
    p.add_argument("--enrollments", help="an enrolment file written by `mmemo enroll --out` (or a folder holding one)")
    p.add_argument("--manifest", help="CSV/JSONL with text/audio/video/image (and speaker) columns: predict every row")
    p.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                   help="manifest column for a field, e.g. audio=file (repeatable)")
    p.add_argument("--out", help="with --manifest: write the predictions here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0, help="processes decoding the manifest's media")
    p.add_argument("--num-threads", type=int,
                   help="with --num-workers 0: threads decoding the manifest's media (default: batch size, at most the CPU count)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled .bin/.pt checkpoint (trusted sources only)")
    p.add_argument("--json", action="store_true", help="print JSON (with --manifest: JSON Lines)")


def _enroll_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="saved model folder or run folder (its best/)")
    p.add_argument("clips", nargs="+", help="the speaker's clips, unlabelled: audio files, or video files (their audio track)")
    p.add_argument("--speaker", required=True, help="the name predictions give with --speaker")
    p.add_argument("--out", help="write the enrolment to this file (.safetensors) instead of the model folder")
    p.add_argument("--enrollments", help="an enrolment file to add to (with --out: its speakers are written too)")


def _timeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="run folder, saved model folder or Hugging Face Hub repo id")
    p.add_argument("recording", help="audio or video file of any length")
    p.add_argument("--out", help="write the rows here (CSV: start, end, label, p_<class>...; JSON with --json)")
    p.add_argument("--plot", help="PNG of each class's probability over time, with the predicted label")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--window", type=float, default=3.0, help="seconds per window")
    p.add_argument("--hop", type=float, default=1.5, help="seconds between window starts")
    p.add_argument("--segments", choices=["fixed", "vad"], default="fixed",
                   help="fixed windows, or speech segments found by silero-vad (pip install mmemo[vad]), silence skipped")
    p.add_argument("--transcript", help="CSV/JSON of start, end, speaker, text: each window gets its text and speaker")
    p.add_argument("--speaker", help="the speaker of the whole recording (a transcript's speakers take precedence)")
    p.add_argument("--enrollments", help="an enrolment file written by `mmemo enroll --out`")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled .bin/.pt checkpoint (trusted sources only)")


def _inspect_vision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_or_config", metavar="RUN_OR_CONFIG", help="run folder, saved model folder or YAML config")
    p.add_argument("clip", help="video or image file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. model.encoders.vision.faces.select=speaker")
    p.add_argument("--out", default="crops.png", help="the contact sheet (PNG) to write (default: crops.png)")
    p.add_argument("--audio", help="audio for faces.select: speaker (default: the clip's own audio track)")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="run folder, saved model folder or Hugging Face Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; 0.0.0.0 for "
                                                        "every interface, with a --token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help=f"bearer token the model's endpoints require (default: ${TOKEN_ENV}; none: open)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="half precision at inference where the device supports it")
    p.add_argument("--max-batch-size", type=int, default=16, help="inputs per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch's first input waits for others")
    p.add_argument("--max-queue", type=int, default=256, help="inputs waiting for the model; beyond, 503 (busy)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body, uploads included (413)")
    p.add_argument("--max-batch-inputs", type=int, default=64, help="inputs in one /predict/batch request")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take, upload included")
    p.add_argument("--tmp-dir", help="folder for the uploads' temporary folders (default: the system's)")
    p.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's, one per core)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled .bin/.pt checkpoint (trusted sources only)")


def _demo_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir")
    p.add_argument("--n-train", type=int, default=280)
    p.add_argument("--n-dev", type=int, default=70)
    p.add_argument("--n-test", type=int, default=70)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--recording", type=float, metavar="MINUTES",
                   help="also recording.wav, this long, its emotion changing every 20 s, and recording.csv, its transcript")


# verb -> (help, arguments, command)
VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train a model from a YAML config", _train_args, _cmd_train),
    "ablate": ("train every modality combination x fusion x seed and tabulate the results", _ablate_args, _cmd_ablate),
    "adapt": ("masked-LM training of the text encoder on the training split's text, before fine-tuning", _adapt_args,
              _cmd_adapt),
    "evaluate": ("evaluate a run's dev-selected model on a split", _evaluate_args, _cmd_evaluate),
    "predict": ("predict the emotion of one input, or of every row of a manifest", _predict_args, _cmd_predict),
    "enroll": ("learn a speaker's statistics from a few of their unlabelled clips", _enroll_args, _cmd_enroll),
    "timeline": ("emotion over a whole recording, window by window", _timeline_args, _cmd_timeline),
    "inspect-vision": ("write a contact sheet of what the vision encoder is shown: sampled frames, faces, crops",
                       _inspect_vision_args, _cmd_inspect_vision),
    "serve": ("serve a model over HTTP, with a page to try it", _serve_args, _cmd_serve),
    "demo-data": ("write the embedded MELD-shaped demo data", _demo_data_args, _cmd_demo_data),
    "models": ("list registered encoders, fusions, readers and loss terms", lambda p: None, _cmd_models),
}
ALIASES = {"list": "models"}


def build_parser(verb: str) -> argparse.ArgumentParser:
    """The parser of one verb. Options and ``key=value`` overrides may come in any order
    (``parse_intermixed_args``), which argparse's sub-parsers do not allow: hence one parser per verb."""
    help_text, arguments, command = VERBS[verb]
    parser = argparse.ArgumentParser(prog=f"mmemo {verb}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    arguments(parser)
    parser.set_defaults(func=command)
    return parser


def _top_parser() -> argparse.ArgumentParser:
    verbs = "\n".join(f"  {name:<14} {help_text}" for name, (help_text, _, _) in VERBS.items())
    parser = argparse.ArgumentParser(prog="mmemo", description="Multimodal emotion recognition.",
                                     epilog=f"commands:\n{verbs}\n\n`mmemo COMMAND --help` for each one's options.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("command", choices=[*VERBS, *ALIASES], metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    top = _top_parser().parse_args(sys.argv[1:] if argv is None else argv)
    verb = ALIASES.get(top.command, top.command)
    args = build_parser(verb).parse_intermixed_args(top.args)
    args.verbose = args.verbose or top.verbose
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (MmemoError, OSError) as exc:  # what a user can cause: one line naming the file or key, no traceback
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                                                             NotADirectoryError)):
            raise
        print(f"mmemo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
