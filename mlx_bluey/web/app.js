// The chat page. Transformers.js (in worker.js) runs an export of `mlx_bluey export` in this tab, from
// files served by `mlx_bluey serve` on this machine. Nothing is fetched from anywhere else.
//
// What it keeps from training and `mlx_bluey generate`:
// - the prompt is the model's own chat template (tokenizer_config.json, written by `mlx_bluey fuse`),
//   the one training used; window.mlxBluey.lastPrompt shows it (the end-to-end test compares it);
// - every stop id of generation_config.json (Gemma 3: <eos> = 1 and <end_of_turn> = 106) ends a reply,
//   and "min new tokens" blocks all of them, not just <eos>;
// - the same sampling defaults as the CLI: the inputs are filled from the model's generation_config.json,
//   where `mlx_bluey fuse` writes mlx_bluey/generation_settings.py's defaults;
// - a reply that hits the token limit is cut back to its last finished sentence, never mid-word (text.js).
import { trimToSentence } from "./text.js";

const worker = new Worker("worker.js", { type: "module" }); // Transformers.js runs there (worker.js)

const $ = (id) => document.getElementById(id);

// State the end-to-end test reads; also handy from the console.
const state = (window.mlxBluey = {
  ready: false, busy: false, messages: [], lastPrompt: null, lastReply: null, chunks: 0,
  stopIds: [], suppressTokens: [], defaults: null, device: null, variant: null, generationOptions: null, error: null,
  readyStatus: null,
});
let catalogue = [];
let character = {};
let pending = null; // {resolve, reject, onChunk?} of the request the worker is busy with

worker.onmessage = ({ data }) => {
  if (data.type === "progress") pending?.onProgress?.(data);
  else if (data.type === "chunk") pending?.onChunk?.(data.text);
  else if (data.type === "rate") setStatus(`Generating: ${data.tokens} tokens, ${data.tokensPerSecond.toFixed(1)} tok/s`);
  else if (data.type === "prompt") state.lastPrompt = data.text;
  else if (data.type === "error") pending?.reject(new Error(data.message));
  else pending?.resolve(data); // ready, done
};

function ask(message, handlers = {}) {
  return new Promise((resolve, reject) => {
    pending = { resolve, reject, ...handlers };
    worker.postMessage(message);
  });
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) state.error = text;
}

function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : (character.name || "Model");
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  turn.append(who, body);
  $("chat").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

async function webgpuAvailable() {
  try {
    return Boolean(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

async function loadCatalogue() {
  catalogue = await (await fetch("/models.json")).json();
  const select = $("model");
  for (const entry of catalogue) {
    for (const v of entry.variants) {
      const option = document.createElement("option");
      option.value = `${entry.name}|${v.variant}`;
      option.textContent = `${entry.name} · ${v.variant} (${v.mb} MB)`;
      select.append(option);
    }
  }
  if (!select.options.length) {
    setStatus("No exported model is served. Start `mlx_bluey serve EXPORT_DIR`.", true);
    return;
  }
  // The default: on WASM, the fastest variant the page benchmark measured whose download fits and whose parity
  // is at least q8's (serve.py's default_variant); on WebGPU fp16 (q4f16 overflows for Gemma 3 270M, and the 8-bit kernels are CPU ones).
  const entry = catalogue[0];
  const gpu = await webgpuAvailable();
  const name = gpu && entry.variants.some((v) => v.variant === "fp16") ? "fp16" : entry.default_variant;
  select.value = `${entry.name}|${name}`;
  describeChoice();
}

// The export and variant the #model menu names: {name, variant, entry (catalogue), info (its variant entry)}.
function chosen() {
  const [name, variant] = $("model").value.split("|");
  const entry = catalogue.find((e) => e.name === name);
  return { name, variant, entry, info: entry.variants.find((v) => v.variant === variant) };
}

// Before loading: what the chosen variant downloads and how fast the page benchmark measured it.
function describeChoice() {
  const { name, variant, info } = chosen();
  const speed = info.wasm_decode_tokens_per_s ? `, measured ${info.wasm_decode_tokens_per_s} tok/s on WASM (2 cores)` : "";
  setStatus(`${name} · ${variant}: ${info.mb} MB to download${speed}. Press Load.`);
}

function explain(error, variant, device) {
  const text = String(error?.message ?? error);
  if (/bad_alloc|out of memory|Aborted|RangeError/i.test(text)) {
    return `This browser ran out of memory loading the ${variant} variant on ${device}. Try q8 or q4: slower on WASM, but they need less memory in the tab than int8 and fp16. (${text})`;
  }
  if (/GatherBlockQuantized|not implemented|Could not find an implementation/i.test(text)) {
    return `The ${variant} variant uses an operator this browser's ${device} backend lacks. Try q8 on WASM. (${text})`;
  }
  return `The ${variant} variant could not run on ${device}: ${text}`;
}

async function load() {
  const { name, variant, entry, info } = chosen();
  let device = $("device").value;
  if (device === "auto") device = (await webgpuAvailable()) ? "webgpu" : "wasm";
  if (device === "webgpu" && !(await webgpuAvailable())) {
    setStatus("This browser has no WebGPU adapter: choose WASM.", true);
    return;
  }
  $("load").disabled = true;
  state.ready = false;
  state.error = null;
  setStatus(`Loading ${name} (${variant}, ${info.mb} MB) on ${device}…`);
  const progress = $("progress");
  progress.hidden = false;
  let ready;
  try {
    ready = await ask({ type: "load", name, dtype: info.dtype, modelFileName: info.model_file_name, device,
                        externalData: info.external_data, sessionConfig: info.session_config }, {
      onProgress: ({ loaded, total }) => {
        progress.value = (100 * loaded) / total;
        setStatus(`Loading ${name} (${variant}) on ${device}: ${(loaded / 1e6).toFixed(0)} of ${(total / 1e6).toFixed(0)} MB`);
      },
    });
  } catch (error) {
    setStatus(explain(error, variant, device), true);
    $("load").disabled = false;
    progress.hidden = true;
    return;
  }
  progress.hidden = true;
  character = entry.character || {};
  state.stopIds = ready.stopIds;
  state.suppressTokens = ready.suppressTokens;
  // the sampling inputs (index.html names each after its generation_config.json key) start at the model's
  // generation_config.json: the CLI's defaults, written by fuse
  state.defaults = {};
  const missing = [];
  for (const input of document.querySelectorAll("#sampling input[type=number]")) {
    const value = ready.generationConfig[input.id];
    if (typeof value !== "number") {
      missing.push(input.id);
      continue;
    }
    state.defaults[input.id] = value;
    input.value = String(value);
  }
  Object.assign(state, { ready: true, device, variant, messages: [] });
  $("title").textContent = character.name ? `Chat with ${character.name}` : "Chat";
  if (character.description) $("subtitle").textContent = character.description;
  // on when the model was trained with a system message: asked without it, it answers in another format
  $("use_system").checked = Boolean(character.trained_system_prompt);
  $("chat").replaceChildren();
  for (const id of ["message", "send", "reset"]) $(id).disabled = false;
  $("load").disabled = false;
  state.readyStatus = `Ready: ${name} · ${variant} · ${device}${device === "wasm" ? ` · ${ready.threads} threads` : ""}` +
    (missing.length ? ` · no default for ${missing.join(", ")} in generation_config.json (export again): set them above` : "");
  setStatus(state.readyStatus);
  $("message").focus();
}

function generationOptions() {
  const number = (id) => Number($(id).value);
  return {
    max_new_tokens: number("max_new_tokens"),
    min_new_tokens: number("min_new_tokens"), // blocks every stop id (worker.js passes them all)
    do_sample: number("temperature") > 0,
    temperature: number("temperature"),
    top_p: number("top_p"),
    top_k: number("top_k"),
    repetition_penalty: number("repetition_penalty"),
  };
}

async function send(text) {
  if (!state.ready || state.busy || !text.trim()) return;
  state.busy = true;
  for (const id of ["message", "send", "reset"]) $(id).disabled = true;
  $("stop").disabled = false;
  state.messages.push({ role: "user", content: text });
  addTurn("user", text);
  const conversation = [...state.messages];
  // the system message the model was trained with (fuse's character.json), else the card's default
  const system = character.trained_system_prompt || character.default_system_prompt;
  if ($("use_system").checked && system) conversation.unshift({ role: "system", content: system });
  const turn = addTurn("assistant", "");
  const body = turn.querySelector(".text");
  let streamed = "";
  state.chunks = 0;
  try {
    const options = generationOptions();
    const done = await ask({ type: "generate", messages: conversation, options }, {
      onChunk: (chunk) => {
        streamed += chunk;
        state.chunks += 1;
        body.textContent = streamed;
        turn.scrollIntoView({ block: "end" });
      },
    });
    state.generationOptions = done.options;
    // hit the limit (or Stop): cut back to the last finished sentence, no half sentence, no half word
    const reply = done.stopped ? done.text : trimToSentence(done.text);
    body.textContent = reply;
    const meta = document.createElement("span");
    meta.className = "meta";
    const decode = done.decodeTokensPerSecond ? ` · decode ${done.decodeTokensPerSecond.toFixed(1)} tok/s` : "";
    meta.textContent = `${done.tokens} tokens in ${done.seconds.toFixed(1)} s${decode}${done.stopped ? "" : " · cut at the limit"}`;
    turn.append(meta);
    state.lastReply = { text: reply, tokens: done.tokens, seconds: done.seconds, stopped: done.stopped,
                        decodeTokensPerSecond: done.decodeTokensPerSecond, promptSeconds: done.promptSeconds,
                        promptTokens: done.promptTokens };
    state.messages.push({ role: "assistant", content: reply });
    setStatus(state.readyStatus); // the live "Generating" line is done; the reply's meta line keeps its speed
  } catch (error) {
    setStatus(explain(error, state.variant, state.device), true);
    body.textContent = "";
    state.messages.pop();
  } finally {
    state.busy = false;
    for (const id of ["message", "send", "reset"]) $(id).disabled = false;
    $("stop").disabled = true;
    $("message").focus();
  }
}

$("load").addEventListener("click", load);
$("model").addEventListener("change", describeChoice);
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value;
  $("message").value = "";
  send(text);
});
$("stop").addEventListener("click", () => worker.postMessage({ type: "stop" }));
$("reset").addEventListener("click", () => {
  state.messages = [];
  $("chat").replaceChildren();
});

loadCatalogue().catch((error) => setStatus(`Could not list the served models: ${error}`, true));
