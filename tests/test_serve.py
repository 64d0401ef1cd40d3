"""`mmemo serve`: every endpoint, batching, the token, the limits, every bad input (a 4xx naming the field and the
reason, never a 5xx), uploads deleted, the CLI as a subprocess on a free loopback port, and the page in a real
headless Chromium (Debian's chromium and chromium-driver, through Selenium)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from mmemo.data.demo import make_frames, make_voice, write_clip  # noqa: E402
from mmemo.errors import RequestError  # noqa: E402
from mmemo.inference import EmotionRecognizer  # noqa: E402
from mmemo.serve import ServeSettings, create_app  # noqa: E402
from mmemo.serve.requests import looks_like_path  # noqa: E402
from mmemo.training.trainer import train  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def run_dir(demo_tree, tmp_path_factory) -> Path:
    """A tiny text+audio+vision model trained by the test (1 epoch on the small demo tree)."""
    run = tmp_path_factory.mktemp("serve") / "run"
    train(tiny_config(demo_tree, train__epochs=1), run_dir=run)
    return run


@pytest.fixture(scope="module")
def recognizer(run_dir) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(run_dir, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-media")
    rng = np.random.default_rng(3)
    voice = make_voice(rng, "anger", 2.0, SR)
    write_clip(d / "clip.mp4", make_frames(rng, "anger", 20, 48), voice)
    write_clip(d / "quiet.mp4", make_frames(rng, "joy", 20, 48), np.zeros(2 * SR, dtype=np.float32))
    sf.write(d / "voice.wav", voice, SR)
    sf.write(d / "long.wav", make_voice(rng, "joy", 5.0, SR), SR)  # longer than data.max_audio_seconds (3 s)
    Image.fromarray(make_frames(rng, "joy", 1, 48)[0]).save(d / "face.png")
    (d / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(2000))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("not a clip")
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def uploads_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def client(recognizer, uploads_dir):
    settings = ServeSettings(max_upload_mb=1, max_batch_inputs=4, tmp_dir=str(uploads_dir))
    with TestClient(create_app(recognizer, settings)) as c:
        yield c


def upload(media, name, field=None, mime="application/octet-stream"):
    return {field or name.split(".")[0]: (name, media[name].read_bytes(), mime)}


def assert_refused(resp, status, field, *words):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["field"] == field, body
    assert body["reason"] and body["detail"].endswith(body["reason"]), body
    for word in words:
        assert word in body["reason"], body
    return body


# -- endpoints -----------------------------------------------------------------------------------------------------

def test_predict_json_text_matches_the_python_api(client, recognizer):
    resp = client.post("/predict", json={"text": "I can't stand this anymore", "top_k": 3})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    direct = recognizer.predict(text="I can't stand this anymore")
    assert body["label"] == direct.label and body["modalities"] == ["text"]
    assert set(body["probs"]) == set(recognizer.labels)
    assert body["probs"] == pytest.approx(direct.probs, abs=1e-5)
    assert [t["label"] for t in body["top_k"]] == [t["label"] for t in direct.top_k[:3]]
    scores = [t["score"] for t in body["top_k"]]
    assert scores == sorted(scores, reverse=True) and body["top_k"][0]["label"] == body["label"]
    assert set(body) >= {"label", "probs", "top_k", "modalities", "contributions", "warnings", "error"}


def test_predict_multipart_every_modality_with_contributions(client, recognizer, media):
    files = {**upload(media, "clip.mp4", "video", "video/mp4"), **upload(media, "face.png", "image", "image/png")}
    resp = client.post("/predict", data={"text": "how dare you", "context": json.dumps(["hi", ["Ross", "what?"]]),
                                         "speaker": "Rachel"}, files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["modalities"] == ["text", "audio", "vision"]  # the video's audio track is the audio input
    assert set(body["contributions"]) == {"text", "audio", "vision"}
    assert "image ignored: vision reads the video's frames" in body["warnings"]
    direct = recognizer.predict(text="how dare you", video=str(media["clip.mp4"]))
    assert body["label"] == direct.label and body["probs"] == pytest.approx(direct.probs, abs=1e-4)


def test_audio_and_image_uploads(client, media):
    resp = client.post("/predict", files={**upload(media, "voice.wav", "audio", "audio/wav"),
                                          **upload(media, "face.png", "image", "image/png")})
    assert resp.status_code == 200, resp.text
    assert resp.json()["modalities"] == ["audio", "vision"]


def test_a_clip_name_without_extension_takes_its_content_type(client, media):
    resp = client.post("/predict", files={"audio": ("blob", media["voice.wav"].read_bytes(), "audio/wav")})
    assert resp.status_code == 200, resp.text


def test_long_audio_is_cut_as_in_predict(client, media):
    body = client.post("/predict", files=upload(media, "long.wav", "audio")).json()
    assert any("long.wav is 5.0 s long; only its first 3 s are used" in w for w in body["warnings"]), body


def test_silent_audio_track_of_a_video_only_warns(client, media):
    resp = client.post("/predict", files=upload(media, "quiet.mp4", "video"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["modalities"] == ["vision"] and any(w.startswith("audio dropped: quiet.mp4") for w in body["warnings"])


def test_batch_json_and_multipart(client, media):
    resp = client.post("/predict/batch", json={"inputs": [{"id": "a", "text": "that's wonderful news"},
                                                          {"text": ""}, {"id": 7, "text": "I miss her"}], "top_k": 1})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert [p["id"] for p in preds] == ["a", "1", "7"]
    assert preds[0]["label"] and len(preds[0]["top_k"]) == 1
    assert preds[1]["label"] is None and preds[1]["field"] == "inputs[1].text" and preds[1]["status"] == 422
    assert preds[2]["label"]

    files = {"audio.1": ("v.wav", media["voice.wav"].read_bytes(), "audio/wav"),
             "video.2": ("c.mp4", media["clip.mp4"].read_bytes(), "video/mp4")}
    resp = client.post("/predict/batch", data={"inputs": json.dumps([{"text": "hi"}, {}, {"text": "no way"}])}, files=files)
    assert resp.status_code == 200, resp.text
    assert [p["modalities"] for p in resp.json()["predictions"]] == [["text"], ["audio"], ["text", "audio", "vision"]]


def test_health_and_info(client, recognizer, run_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    info = client.get("/info").json()
    assert info["labels"] == recognizer.labels and info["modalities"] == ["text", "audio", "vision"]
    assert info["encoders"]["text"] == {"name": "hf_text", "checkpoint": "sentence-transformers/all-MiniLM-L6-v2"}
    assert info["encoders"]["vision"] == {"name": "timm", "backbone": "test_resnet"}
    dev = json.loads((run_dir / "eval_dev.json").read_text())
    test = json.loads((run_dir / "eval_test.json").read_text())
    assert info["metrics"]["dev"]["weighted_f1"] == dev["weighted_f1"]
    assert info["metrics"]["test"]["accuracy"] == test["accuracy"]
    assert info["limits"]["max_upload_mb"] == 1 and "token" not in info["limits"]
    assert ".wav" in info["accepts"]["audio"] and ".png" in info["accepts"]["image"]


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js">' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "MediaRecorder" in js.text and 'fetch("/predict"' in js.text


def test_concurrent_requests_are_batched(recognizer):
    texts = ["I'm so happy for you", "get out of my apartment", "I miss her so much", "what if they find out",
             "ew, that's disgusting", "wait, what? really?", "the meeting is at three", "best day ever"]
    app = create_app(recognizer, ServeSettings(max_batch_size=8, max_wait_ms=300))
    predict = app.state.batcher._predict

    def slow(rows):  # a slow model: requests that come while it works wait in the queue
        time.sleep(0.3)
        return predict(rows)

    app.state.batcher._predict = slow
    with TestClient(app) as c:
        answers: dict[str, dict] = {}

        def ask(text: str) -> None:
            answers[text] = c.post("/predict", json={"text": text}).json()

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        health = c.get("/health").json()
    assert health["inputs"] == len(texts)
    assert health["batches"] < len(texts), health  # several requests shared a forward pass
    for text in texts:  # each request got its own input's answer
        assert answers[text]["probs"] == pytest.approx(recognizer.predict(text=text).probs, abs=1e-4)


# -- models that describe themselves: model cards, top_k, pipeline-shaped output, half precision ------------------

def test_run_best_carries_a_model_card_with_dev_and_test_metrics(run_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "best" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "mmemo"
    assert {"mmemo", "emotion-recognition", "multimodal", "text", "audio", "vision"} <= set(data["tags"])
    assert data["labels"] == json.loads((run_dir / "best" / "labels.json").read_text())["labels"]
    assert data["modalities"] == ["text", "audio", "vision"]
    assert data["encoders"]["text"]["checkpoint"] == "sentence-transformers/all-MiniLM-L6-v2"  # not encoders/text
    root = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"]
    assert data["training_data"] == f"MELD ({Path(root).name})"
    for split in ("dev", "test"):
        expected = json.loads((run_dir / f"eval_{split}.json").read_text())
        got = data["mmemo_metrics"][split]
        assert {k: got[k] for k in ("accuracy", "weighted_f1", "macro_f1", "uar", "n")} == \
               {k: expected[k] for k in ("accuracy", "weighted_f1", "macro_f1", "uar", "n")}
    assert data["mmemo_metrics"]["dev"]["epoch"] == 1  # from the evaluation that selected it
    results = {(r["dataset"]["split"], m["type"]): m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]}
    assert results[("test", "weighted_f1")] == data["mmemo_metrics"]["test"]["weighted_f1"]
    assert "| dev |" in card.text and "| test |" in card.text


def test_card_survives_save_pretrained_and_goes_to_the_hub(recognizer, tmp_path, fake_hub):
    saved = recognizer.save_pretrained(tmp_path / "copy")
    again = EmotionRecognizer.from_pretrained(saved)
    assert again.card["metrics"] == recognizer.card["metrics"] and again.card["metrics"]["test"]
    assert again.card["encoders"] == recognizer.card["encoders"]

    recognizer.push_to_hub("me/model")
    assert "README.md" in fake_hub["files"] and "library_name: mmemo" in fake_hub["card"]
    assert "mmemo_metrics:" in fake_hub["card"]


def test_a_model_without_card_or_with_a_broken_one_still_loads(recognizer, tmp_path):
    folder = recognizer.save_pretrained(tmp_path / "m")
    (folder / "README.md").write_text("---\n[not: yaml\n---\nhello")
    assert EmotionRecognizer.from_pretrained(folder).card == {}
    (folder / "README.md").unlink()
    assert EmotionRecognizer.from_pretrained(folder).labels == recognizer.labels


def test_top_k_and_pipeline_shaped_call(recognizer):
    pred = recognizer.predict(text="I'm so happy for you", top_k=2)
    assert len(pred.top_k) == 2 and pred.top_k[0] == {"label": pred.label, "score": pred.probs[pred.label]}
    assert pred.top_k[0]["score"] >= pred.top_k[1]["score"] >= sorted(pred.probs.values())[-2]
    assert len(recognizer.predict(text="hi").top_k) == len(recognizer.labels)
    assert pred.to_dict()["top_k"][1]["label"] == pred.top_k[1]["label"]
    assert recognizer("I'm so happy for you") == [pred.top_k[0]]
    assert recognizer(text="I'm so happy for you", top_k=None) == recognizer.predict(text="I'm so happy for you").top_k
    both = recognizer(["I'm so happy for you", {"text": "I miss her"}], top_k=3)
    assert len(both) == 2 and [len(x) for x in both] == [3, 3] and both[0][0]["label"] == pred.label
    with pytest.raises(ValueError, match="top_k"):
        recognizer.predict(text="hi", top_k=0)


def test_half_precision_at_inference(run_dir, recognizer, media):
    from mmemo.errors import ConfigError

    half = EmotionRecognizer.from_pretrained(run_dir, device="cpu", dtype="bfloat16")
    assert half.dtype == "bfloat16" and next(half.model.parameters()).dtype.is_floating_point
    inputs = dict(text="how dare you", video=str(media["clip.mp4"]))
    full, low = recognizer.predict(**inputs), half.predict(**inputs)
    assert low.probs == pytest.approx(full.probs, abs=0.05) and low.probs != full.probs  # it did run in bfloat16
    assert set(low.contributions) == {"text", "audio", "vision"}
    with pytest.raises(ConfigError, match="dtype: expected one of"):
        EmotionRecognizer.from_pretrained(run_dir, dtype="int8")


# -- safety --------------------------------------------------------------------------------------------------------

def test_token_guards_the_model_but_not_the_page(recognizer):
    with TestClient(create_app(recognizer, ServeSettings(token="s3cret"))) as c:
        for resp in (c.post("/predict", json={"text": "hi"}), c.get("/info"),
                     c.post("/predict", json={"text": "hi"}, headers={"Authorization": "Bearer wrong"}),
                     c.post("/predict/batch", json={"inputs": [{"text": "hi"}]}, headers={"Authorization": "s3cret"})):
            assert resp.status_code == 401, resp.text
            assert resp.headers["www-authenticate"] == "Bearer" and "token" in resp.json()["reason"]
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/predict", json={"text": "hi"}, headers=ok).status_code == 200
        assert c.get("/info", headers=ok).json()["token_required"] is True
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


@pytest.mark.parametrize("value", ["/etc/passwd", "~/.ssh/id_rsa", "../config.yaml", "C:\\Windows\\win.ini",
                                   "file:///etc/passwd", "https://example.com/a.wav", "clip.mp4", "  /tmp/x.wav "])
def test_path_like_strings(value):
    assert looks_like_path(value)


@pytest.mark.parametrize("value", ["I can't stand this", "10/10 would watch again", "what?!", "w/e", "...", ""])
def test_text_is_not_a_path(value):
    assert not looks_like_path(value)


def test_a_request_never_names_a_server_file(client, media):
    secret = str(media["voice.wav"])  # a real file on the server
    assert_refused(client.post("/predict", data={"audio": secret}), 400, "audio", "cannot name a file on the server")
    assert_refused(client.post("/predict", json={"video": secret}), 400, "video", "cannot name a file on the server")
    assert_refused(client.post("/predict", files={"text": (None, secret)}), 400, "text", "file path")
    assert_refused(client.post("/predict", json={"text": "hi", "context": ["ok", ["Ross", secret]]}), 400,
                   "context[1][1]", "file path")
    assert_refused(client.post("/predict", json={"text": "hi", "speaker": secret}), 400, "speaker", "file path")
    assert_refused(client.post("/predict/batch", json={"inputs": [{"text": "hi"}, {"image": secret}]}), 400,
                   "inputs[1].image", "cannot name a file on the server")


def test_oversized_upload_is_refused_before_and_while_it_arrives(client):
    big = b"\0" * (2 << 20)  # the client's limit is 1 MB
    assert_refused(client.post("/predict", files={"audio": ("big.wav", big, "audio/wav")}), 413, "body",
                   "--max-upload-mb")

    def chunks():  # no Content-Length: refused once the streamed body passes the limit
        yield b'{"text": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    resp = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(resp, 413, "body", "more than this server takes")


@pytest.mark.parametrize("kwargs, status, field, words", [
    ({"files": {"audio": ("notes.txt", b"not a clip", "text/plain")}}, 415, "audio", ["notes.txt", "unsupported format"]),
    ({"files": {"audio": ("corrupt.wav", b"RIFF" + b"\x13" * 3000, "audio/wav")}}, 422, "audio", ["corrupt.wav", "cannot decode"]),
    ({"files": {"audio": ("empty.wav", b"", "audio/wav")}}, 422, "audio", ["empty.wav", "empty file"]),
    ({"files": {"video": ("clip.mp4", b"\0\0\0\x18ftypmp42" + b"\1" * 500, "video/mp4")}}, 422, "video", ["clip.mp4"]),
    ({"files": {"image": ("face.png", b"\x89PNG\r\n\x1a\n" + b"\2" * 300, "image/png")}}, 422, "image", ["face.png", "cannot decode image"]),
    ({"data": {"text": "hi"}, "files": {"audio": ("corrupt.wav", b"RIFF" + b"\x13" * 3000, "audio/wav")}}, 422, "audio", ["cannot decode"]),
    ({"json": {"text": ""}}, 422, "text", ["empty text"]),
    ({"json": {"text": "   "}}, 422, "text", ["empty"]),
    ({"json": {}}, 422, None, ["nothing to predict"]),
    ({"json": {"context": ["earlier"], "speaker": "Ross"}}, 422, None, ["nothing to predict"]),
    ({"json": {"txt": "hi"}}, 400, "txt", ["unknown field"]),
    ({"json": {"text": 5}}, 400, "text", ["expected a string"]),
    ({"json": {"text": "hi", "top_k": 0}}, 400, "top_k", ["positive integer"]),
    ({"json": {"text": "hi", "context": "not json"}}, 400, "context", ["not valid JSON"]),
    ({"json": ["hi"]}, 400, "body", ["JSON object"]),
    ({"content": b"{\"text\": ", "headers": {"content-type": "application/json"}}, 400, "body", ["not valid JSON"]),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "body", ["text/plain"]),
    ({"files": [("text", (None, "a")), ("text", (None, "b"))]}, 400, "text", ["more than once"]),
    ({"files": {"text": ("a.txt", b"hello", "text/plain")}}, 400, "text", ["got a file"]),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 400, "body", ["boundary"]),
])
def test_bad_inputs_get_a_4xx_naming_field_and_reason(client, kwargs, status, field, words):
    assert_refused(client.post("/predict", **kwargs), status, field, *words)


@pytest.mark.parametrize("body, status, field", [
    ({"inputs": "hi"}, 400, "inputs"),
    ({"inputs": []}, 400, "inputs"),
    ({"inputs": [{"text": "a"}] * 5}, 413, "inputs"),  # max_batch_inputs=4
    ({"inputs": ["hi"]}, 400, "inputs[0]"),
    ({"inputs": [{"text": "a", "id": [1]}]}, 400, "inputs[0].id"),
    ({"inputs": [{"text": "a"}], "extra": 1}, 400, "extra"),
])
def test_bad_batches_are_refused_whole(client, body, status, field):
    assert_refused(client.post("/predict/batch", json=body), status, field)


def test_batch_file_for_a_missing_input(client, media):
    resp = client.post("/predict/batch", data={"inputs": json.dumps([{"text": "hi"}])},
                       files={"audio.3": ("v.wav", media["voice.wav"].read_bytes(), "audio/wav")})
    assert_refused(resp, 400, "audio.3", "no input '3'")


def test_uploads_are_deleted_after_each_request(client, media, uploads_dir):
    client.post("/predict", files=upload(media, "clip.mp4", "video"))
    client.post("/predict", files={"audio": ("corrupt.wav", b"RIFF" + b"\x13" * 3000, "audio/wav")})
    client.post("/predict/batch", data={"inputs": json.dumps([{}])}, files={"audio.0": ("v.wav", b"", "audio/wav")})
    assert list(uploads_dir.iterdir()) == []


def test_time_limit_answers_503_and_still_cleans_up(recognizer, media, tmp_path):
    settings = ServeSettings(timeout_s=0.5, tmp_dir=str(tmp_path))
    app = create_app(recognizer, settings)
    batcher = app.state.batcher
    predict = batcher._predict

    still_there = []

    def slow(rows):
        time.sleep(1.5)  # the request gives up meanwhile; the files the model took must stay until it is done
        still_there.append(all(Path(row["audio"]).is_file() for row in rows))
        return predict(rows)

    batcher._predict = slow
    with TestClient(app) as c:
        resp = c.post("/predict", files=upload(media, "voice.wav", "audio"))
        assert_refused(resp, 503, None, "--timeout")
        assert resp.headers["retry-after"] == "1"
        time.sleep(1.5)  # the model finishes the input it took; its upload goes then
        assert still_there == [True]
        assert list(tmp_path.iterdir()) == []


def test_full_queue_is_503_not_a_lost_request(recognizer):
    app = create_app(recognizer, ServeSettings(max_queue=2))
    with TestClient(app) as c:
        resp = c.post("/predict/batch", json={"inputs": [{"text": "a"}, {"text": "b"}, {"text": "c"}]})
        assert_refused(resp, 503, None, "busy")
        assert c.post("/predict/batch", json={"inputs": [{"text": "a"}, {"text": "b"}]}).status_code == 200


def test_request_error_is_a_mmemo_error():
    from mmemo.errors import MmemoError

    exc = RequestError("audio", "empty file", 422)
    assert isinstance(exc, MmemoError) and str(exc) == "audio: empty file"


# -- the command ---------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mmemo", "serve", str(model), "--port", str(port), *args],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mmemo serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"mmemo serve did not answer in 120 s:\n{proc.stdout.read()}")


def stop_server(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_mmemo_serve_command(run_dir, media):
    proc, url = start_server(run_dir, "--dtype", "bfloat16", "--timeout", "2", env={"MMEMO_SERVE_TOKEN": "tok"})
    try:
        auth = {"Authorization": "Bearer tok"}
        assert httpx.post(f"{url}/predict", json={"text": "hi"}).status_code == 401  # the token from the environment
        info = httpx.get(f"{url}/info", headers=auth).json()
        assert info["dtype"] == "bfloat16" and info["limits"]["timeout_s"] == 2
        resp = httpx.post(f"{url}/predict", headers=auth, files={"video": ("clip.mp4", media["clip.mp4"].read_bytes())},
                          data={"text": "how dare you"}, timeout=60)
        assert resp.status_code == 200 and resp.json()["modalities"] == ["text", "audio", "vision"], resp.text

        # a body that never arrives: 408 once --timeout passes, not a worker held forever
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"text\"")
            answer = b""
            while b'"reason"' not in answer:  # headers and body may come in separate packets
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and '"field":"body"' in answer, answer
    finally:
        out = stop_server(proc)
    assert "at http://127.0.0.1:" in out and "(bearer token required)" in out, out  # loopback unless told otherwise


def test_serve_refuses_what_the_device_cannot_run(run_dir, capsys):
    from mmemo.cli import main

    assert main(["serve", str(run_dir), "--device", "meta", "--dtype", "float16"]) == 2
    assert "dtype: half precision is not supported on meta" in capsys.readouterr().err


# -- the page, in a real headless Chromium -------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's chromium through its chromium-driver (``make setup`` installs both)."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed and could not be (make setup installs "
                    "them with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def page_url(run_dir):
    proc, url = start_server(run_dir)
    yield url
    stop_server(proc)


def _open_page(browser, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}/")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "model-summary").text.startswith("text + audio + vision"))
    for field in ("text", "audio", "video", "image"):  # the model's inputs are offered
        assert browser.find_element(By.ID, field).is_displayed()
    browser.find_element(By.ID, "clear").click()


def _submit_and_wait(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("document.body.dataset.state = ''")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 90).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")


def test_page_predicts_text_and_a_clip(browser, page_url, recognizer, media, run_dir):
    from selenium.webdriver.common.by import By

    _open_page(browser, page_url)
    metrics = browser.find_element(By.ID, "metrics").text
    assert f"weighted F1 {json.loads((run_dir / 'eval_dev.json').read_text())['weighted_f1']}" in metrics
    browser.find_element(By.ID, "text").send_keys("how dare you")
    browser.find_element(By.ID, "video").send_keys(str(media["clip.mp4"]))
    _submit_and_wait(browser)
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    expected = recognizer.predict(text="how dare you", video=str(media["clip.mp4"]))
    assert browser.find_element(By.ID, "label").text == expected.label
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert [b.get_attribute("data-label") for b in bars] == [t["label"] for t in expected.top_k]
    shown = [float(b.find_element(By.CLASS_NAME, "value").text) for b in bars]
    assert shown == pytest.approx([t["score"] for t in expected.top_k], abs=2e-3)
    track = bars[0].find_element(By.CLASS_NAME, "track").size["width"]
    drawn = [b.find_element(By.CLASS_NAME, "fill").size["width"] / track for b in bars]  # the bars as drawn
    assert drawn == pytest.approx(shown, abs=0.02) and drawn[0] > 0
    assert not browser.find_element(By.ID, "preview").is_displayed()  # no empty video box before a recording
    rows = browser.find_elements(By.CSS_SELECTOR, "#contributions .bar")
    assert [r.get_attribute("data-modality") for r in rows] == ["text", "audio", "vision"]


def test_page_shows_the_field_and_reason_of_a_bad_upload(browser, page_url, media):
    from selenium.webdriver.common.by import By

    _open_page(browser, page_url)
    browser.find_element(By.ID, "audio").send_keys(str(media["corrupt.wav"]))
    _submit_and_wait(browser)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.startswith("audio: corrupt.wav: cannot decode audio"), error.text
    assert not browser.find_element(By.ID, "prediction").is_displayed()


def test_page_records_a_clip_with_the_browsers_media_recorder(browser, page_url, recognizer):
    """Chromium's fake camera and microphone stand in for the user's; the recorded webm goes to the server."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open_page(browser, page_url)
    browser.find_element(By.ID, "record").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "record-status").text == "recording…")
    time.sleep(2.0)
    browser.find_element(By.ID, "record").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "record-status").text.startswith("recorded"))
    assert browser.find_element(By.ID, "record-status").text.endswith("as video")
    _submit_and_wait(browser)
    error = browser.find_element(By.ID, "error")
    assert not error.is_displayed(), error.text
    assert browser.find_element(By.ID, "label").text in recognizer.labels
    assert "vision" in browser.find_element(By.ID, "used").text and "audio" in browser.find_element(By.ID, "used").text
