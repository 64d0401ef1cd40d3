// The page of `mmemo serve`: one form posted to /predict as multipart, the answer drawn as bars.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let recorded = null; // {field, file} from the MediaRecorder

function headers() {
  const token = sessionStorage.getItem("mmemo-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function show(id, visible) { $(id).hidden = !visible; }

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  $("error").textContent = text;
  show("error", Boolean(text));
}

async function loadInfo() {
  const response = await fetch("/info", { headers: headers() });
  if (response.status === 401) {
    show("token-box", true);
    $("model-summary").textContent = "Enter the server's token to use the model.";
    return;
  }
  if (!response.ok) {
    $("model-summary").textContent = `The model's description could not be read (HTTP ${response.status}).`;
    return;
  }
  info = await response.json();
  show("token-box", false);
  $("model-name").textContent = info.name || "";
  $("model-summary").textContent =
    `${info.modalities.join(" + ")} → ${info.labels.length} classes (${info.labels.join(", ")})` +
    (info.training_data ? `; trained on ${info.training_data}` : "") + `; ${info.dtype} on ${info.device}.`;
  const accepts = info.accepts || {};
  document.querySelectorAll("[data-input]").forEach((el) => {
    const name = el.dataset.input;
    el.hidden = name === "record" ? !(canRecord() && (accepts.audio || accepts.video)) : !accepts[name];
  });
  const metrics = Object.entries(info.metrics || {}).map(([split, m]) =>
    `${split}: weighted F1 ${m.weighted_f1 ?? "?"}, accuracy ${m.accuracy ?? "?"} (n=${m.n ?? "?"})`);
  $("metrics").textContent = metrics.length ? `Evaluation — ${metrics.join("; ")}.` : "";
}

function canRecord() { return Boolean(navigator.mediaDevices && window.MediaRecorder); }

// -- recording ---------------------------------------------------------------------------------
let recorder = null;

async function toggleRecording() {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  const withVideo = Boolean(info.accepts.video && info.modalities.includes("vision"));
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: info.modalities.includes("audio"), video: withVideo });
  } catch (err) {
    showError(`recording: ${err.message || err.name}`);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    const type = (recorder.mimeType || "video/webm").split(";")[0];
    const field = withVideo ? "video" : "audio";
    recorded = { field, file: new File(chunks, "recording.webm", { type }) };
    $(field).value = "";
    $("preview").srcObject = null;
    $("preview").src = URL.createObjectURL(recorded.file);
    $("preview").controls = true;
    show("preview", withVideo);
    $("record").textContent = "Record again";
    $("record-status").textContent = `recorded ${(recorded.file.size / 1024).toFixed(0)} KB as ${field}`;
  };
  recorder.start();
  if (withVideo) { $("preview").srcObject = stream; $("preview").controls = false; show("preview", true); $("preview").play(); }
  $("record").textContent = "Stop";
  $("record-status").textContent = "recording…";
  const limit = (info.max_audio_seconds || 10) * 1000;
  setTimeout(() => { if (recorder.state === "recording") recorder.stop(); }, limit);
}

// -- the prediction ----------------------------------------------------------------------------
function bar(name, value, top) {
  const row = document.createElement("div");
  row.className = "bar" + (top ? " top" : "");
  row.dataset.label = name;
  row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
  row.querySelector(".name").textContent = name;
  row.querySelector(".fill").style.width = `${(value * 100).toFixed(1)}%`;
  row.querySelector(".value").textContent = value.toFixed(3);
  return row;
}

function contributionBar(name, value) {
  const row = document.createElement("div");
  row.className = "bar contrib";
  row.dataset.modality = name;
  row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
  row.querySelector(".name").textContent = name;
  const fill = row.querySelector(".fill");
  const width = Math.min(Math.abs(value), 1) * 50;
  fill.style.width = `${width}%`;
  fill.style.left = value >= 0 ? "50%" : `${50 - width}%`;
  if (value < 0) fill.classList.add("neg");
  row.querySelector(".value").textContent = (value >= 0 ? "+" : "") + value.toFixed(3);
  return row;
}

function render(pred) {
  $("label").textContent = pred.label;
  $("used").textContent = `from ${pred.modalities.join(", ")}`;
  $("bars").replaceChildren(...pred.top_k.map((t, i) => bar(t.label, t.score, i === 0)));
  const contributions = Object.entries(pred.contributions || {});
  $("contribution-label").textContent = pred.label;
  show("contributions-title", contributions.length > 0);
  show("contributions-help", contributions.length > 0);
  $("contributions").replaceChildren(...contributions.map(([m, v]) => contributionBar(m, v)));
  $("warnings").replaceChildren(...(pred.warnings || []).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  show("prediction", true);
}

async function submit(event) {
  event.preventDefault();
  if (!info) { showError("The model's description is not loaded yet (is a token needed?)."); return; }
  const form = new FormData();
  const text = $("text").value.trim();
  if (text && info.accepts.text) form.append("text", text);
  for (const field of ["audio", "video", "image"]) {
    const input = $(field);
    if (input.files && input.files.length) form.append(field, input.files[0]);
    else if (recorded && recorded.field === field) form.append(field, recorded.file);
  }
  if ([...form.keys()].length === 0) { showError("Type some text, or give a clip or an image."); return; }
  showError("");
  show("prediction", false);
  $("submit").disabled = true;
  setStatus("Predicting…");
  document.body.dataset.state = "busy";
  try {
    const response = await fetch("/predict", { method: "POST", body: form, headers: headers() });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (response.status === 401) { show("token-box", true); }
    if (!response.ok) {
      showError(body.field ? `${body.field}: ${body.reason}` : (body.reason || body.detail));
      setStatus("");
    } else {
      render(body);
      setStatus("");
    }
  } catch (err) {
    showError(`The server did not answer (${err.message || err}).`);
    setStatus("");
  } finally {
    $("submit").disabled = false;
    document.body.dataset.state = "done";
  }
}

function setupDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) {
      const files = new DataTransfer();
      files.items.add(e.dataTransfer.files[0]);
      $("image").files = files.files;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", submit);
  $("predict-form").addEventListener("reset", () => {
    recorded = null;
    $("record-status").textContent = "";
    show("preview", false);
    show("prediction", false);
    showError("");
  });
  $("record").addEventListener("click", toggleRecording);
  for (const field of ["audio", "video"]) {
    $(field).addEventListener("change", () => { if (recorded && recorded.field === field) { recorded = null; $("record-status").textContent = ""; } });
  }
  $("token-save").addEventListener("click", () => {
    sessionStorage.setItem("mmemo-token", $("token").value.trim());
    loadInfo();
  });
  setupDrop();
  loadInfo();
});
