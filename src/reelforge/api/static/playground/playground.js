// The playground's form: what the served models allow (GET /v2/models), the frames checked
// in the browser, a submit followed to the end, the video played, and the key's history.

import * as api from "./api.js";
import { dataUri, preview, refusal, wireDrop } from "./frames.js";
import { History } from "./history.js";
import { describe, follow } from "./progress.js";

const $ = (id) => document.getElementById(id);
const FIELDS = {
  prompt: "prompt",
  model: "model",
  duration: "duration",
  resolution: "resolution",
  image_url: "first-frame",
  first_frame_image: "first-frame",
  last_image_url: "last-frame",
  enhance_prompt: "enhance-prompt",
  prompt_optimizer: "enhance-prompt",
};
/** The API's name of a field → the id of the control that sets it. */
const WIRE = { "first-frame": "image_url", "last-frame": "last_image_url" };

const state = {
  models: [],
  rules: null,
  frames: { "first-frame": null, "last-frame": null },
  problems: { "first-frame": null, "last-frame": null },
};
let history;

// --- errors: the API's message, next to the field it names --------------------------------

function showError(message, field) {
  clearError();
  const error = $("error");
  const id = FIELDS[field] || field;
  const control = id && $(id);
  const holder = control ? control.closest(".field") : $("generate");
  if (control) {
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", "error");
    holder.append(error);
  } else {
    holder.before(error);
  }
  error.textContent = message;
  error.hidden = false;
}

function clearError() {
  const error = $("error");
  error.hidden = true;
  error.textContent = "";
  for (const control of document.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
    control.removeAttribute("aria-describedby");
  }
}

function showFailure(failure) {
  if (failure instanceof api.ApiError) {
    showError(failure.message, failure.status === 401 ? "api-key" : failure.field);
  } else {
    showError(`Could not reach the server (${failure.message})`, null);
  }
}

// --- what the models allow -----------------------------------------------------------------

async function loadModels() {
  const answer = await api.models();
  state.models = answer.models;
  state.rules = answer.rules;
  fill($("model"), state.models.map((m) => [m.id, m.id]));
  const preferred = state.models.find((m) => m.id === "minimax/hailuo-02");
  if (preferred) $("model").value = preferred.id;
  chips(state.rules.camera_commands);
  $("prompt").maxLength = state.rules.max_prompt_chars;
  onModel();
}

function fill(select, options) {
  const kept = select.value;
  select.replaceChildren(
    ...options.map(([value, text]) => new Option(text, value)),
  );
  if (options.some(([value]) => value === kept)) select.value = kept;
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value);
}

function onModel() {
  const model = currentModel();
  if (!model) return;
  fill($("resolution"), model.resolutions.map((r) => [r, r]));
  onResolution();
  for (const [id, able] of [["first-frame", model.first_frame], ["last-frame", model.last_frame]]) {
    $(id).disabled = !able;
    $(id).closest(".field").classList.toggle("unavailable", !able);
  }
}

function onResolution() {
  const model = currentModel();
  const allowed = state.rules.durations_by_resolution[$("resolution").value] || [];
  const durations = model.durations.filter((d) => allowed.includes(d));
  fill($("duration"), durations.map((d) => [String(d), `${d} s`]));
}

function chips(commands) {
  $("chips").replaceChildren(
    ...commands.map((command) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = command;
      chip.setAttribute("aria-label", `Insert camera command ${command}`);
      chip.addEventListener("click", () => insert(`[${command}]`));
      return chip;
    }),
  );
}

function insert(text) {
  const box = $("prompt");
  const start = box.selectionStart ?? box.value.length;
  const end = box.selectionEnd ?? start;
  const before = box.value.slice(0, start);
  const spaced = before && !before.endsWith(" ") ? ` ${text}` : text;
  box.setRangeText(spaced, start, end, "end");
  box.focus();
}

// --- frames --------------------------------------------------------------------------------

async function onFrame(id, file) {
  const zone = $(id).closest(".drop");
  state.frames[id] = null;
  state.problems[id] = null;
  preview(zone, null);
  if ($("error").closest(".field") === zone.closest(".field")) clearError();
  if (!file) return;
  const problem = await refusal(file, WIRE[id], state.rules.image);
  if (problem) {
    state.problems[id] = problem;
    zone.querySelector(".clear").hidden = false;
    showError(problem, id);
    return;
  }
  state.frames[id] = file;
  preview(zone, file);
}

// --- submit and follow ---------------------------------------------------------------------

async function body() {
  const request = {
    model: $("model").value,
    prompt: $("prompt").value,
    duration: Number($("duration").value),
    resolution: $("resolution").value,
    enhance_prompt: $("enhance-prompt").checked,
  };
  for (const [id, name] of Object.entries(WIRE)) {
    if (state.frames[id]) request[name] = await dataUri(state.frames[id]);
  }
  return request;
}

async function submit(event) {
  event.preventDefault();
  if (!api.storedKey()) return showError("Enter your API key first.", "api-key");
  if (!$("prompt").value.trim()) return showError("prompt: write what the video shows", "prompt");
  const blocked = Object.keys(state.problems).find((id) => state.problems[id]);
  if (blocked) return showError(state.problems[blocked], blocked);
  clearError();
  $("generate").disabled = true;
  showVideo(null);
  $("status").textContent = "Sending…";
  $("status").dataset.state = "sending";
  $("progress").value = 0;
  try {
    const created = await api.create(await body());
    show({ status: created.status, progress: 0 });
    history.load().catch(() => {});
    const final = await follow(created.id, show);
    if (final.status === "completed") showVideo(final.video.url);
    history.load().catch(() => {});
  } catch (failure) {
    showFailure(failure);
    $("status").textContent = "Not generated.";
  } finally {
    $("generate").disabled = false;
  }
}

function show(view) {
  $("status").textContent = describe(view);
  $("status").dataset.state = view.status;
  $("progress").value = view.status === "completed" ? 100 : view.progress || 0;
}

function showVideo(url) {
  const video = $("video");
  video.hidden = !url;
  $("video-actions").hidden = !url;
  if (!url) {
    video.removeAttribute("src");
    return;
  }
  video.src = url;
  $("download").href = url;
}

async function copyLink() {
  const url = $("video").src;
  try {
    await navigator.clipboard.writeText(url);
    $("status").textContent = "Link copied.";
  } catch {
    window.prompt("Copy the video's link:", url);
  }
}

/** The resolution class of an OpenAI-shaped size: "768P" as it is, "1024x768" by its
 *  shorter side. */
function resolutionOf(size) {
  if (/^\d+P$/.test(size)) return size;
  const [width, height] = size.split("x").map(Number);
  return `${Math.min(width, height)}P`;
}

async function rerun(view) {
  clearError();
  try {
    const original = await api.request(view.id);
    $("model").value = view.model;
    onModel();
    const resolution = resolutionOf(original.size);
    if ([...$("resolution").options].some((o) => o.value === resolution)) {
      $("resolution").value = resolution;
    }
    onResolution();
    $("duration").value = original.seconds;
    $("prompt").value = original.prompt;
    $("status").textContent = `Form filled from ${view.id}; attach its frames again if it had any.`;
    $("generate").focus();
  } catch (failure) {
    showFailure(failure);
  }
}

// --- start ---------------------------------------------------------------------------------

async function connect() {
  clearError();
  if (!api.storedKey()) {
    $("status").textContent = "Enter your API key to start.";
    return;
  }
  try {
    await loadModels();
    await history.load();
  } catch (failure) {
    showFailure(failure);
  }
}

function start() {
  history = new History($("history"), $("more"), rerun);
  $("api-key").value = api.storedKey();
  $("api-key").addEventListener("change", () => {
    api.storeKey($("api-key").value.trim());
    connect();
  });
  $("model").addEventListener("change", onModel);
  $("resolution").addEventListener("change", onResolution);
  for (const zone of document.querySelectorAll(".drop")) {
    wireDrop(zone, (file) => onFrame(zone.dataset.for, file));
  }
  $("form").addEventListener("submit", submit);
  $("copy-link").addEventListener("click", copyLink);
  $("refresh").addEventListener("click", () => history.load().catch(showFailure));
  connect();
}

start();
