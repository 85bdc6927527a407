// The model side of the chat page, in a Web Worker so the page stays responsive while WASM computes.
// Messages in:  {type: "load", name, dtype, modelFileName, device, externalData, sessionConfig}
//               {type: "generate", messages, options}      options: max/min_new_tokens, sampling
//               {type: "stop"}
// Messages out: {type: "progress", loaded, total} | {type: "ready", stopIds, suppressTokens, generationConfig, threads}
//               {type: "prompt", text} | {type: "chunk", text} | {type: "rate", tokens, tokensPerSecond}
//               {type: "done", ids, seconds} | {type: "error", message}
import {
  env,
  AutoTokenizer,
  AutoModelForCausalLM,
  TextStreamer,
  InterruptableStoppingCriteria,
  LogitsProcessor,
} from "/vendor/transformers.min.js";
import { makeNucleusProcessor, makeRepetitionProcessor } from "./sampling.js";

// mlx_bluey/generation.py penalises repeats among the reply's last 64 tokens (REPETITION_CONTEXT_TOKENS).
const REPETITION_WINDOW = 64;

env.allowRemoteModels = false; // never the Hugging Face hub
env.allowLocalModels = true;
env.localModelPath = "/models/";
env.useBrowserCache = false; // the files come from this machine already
env.backends.onnx.wasm.wasmPaths = {
  // the runtime Transformers.js would otherwise take from a CDN, served by `mlx_bluey serve`
  mjs: "/vendor/ort/ort-wasm-simd-threaded.asyncify.mjs",
  wasm: "/vendor/ort/ort-wasm-simd-threaded.asyncify.wasm",
};
// Threads need SharedArrayBuffer, which needs the COOP/COEP headers `serve` sends.
env.backends.onnx.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

let tokenizer = null;
let model = null;
let stopIds = [];
const stopper = new InterruptableStoppingCriteria();

async function load({ name, dtype, modelFileName, device, externalData, sessionConfig }) {
  const loaded = {};
  await model?.dispose();
  model = null;
  tokenizer = await AutoTokenizer.from_pretrained(name);
  model = await AutoModelForCausalLM.from_pretrained(name, {
    // onnx/{model_file_name}{dtype's suffix}.onnx, e.g. model_vocab + int8 -> model_vocab_int8.onnx (export.json)
    dtype,
    model_file_name: modelFileName,
    device,
    use_external_data_format: externalData,
    // onnxruntime config entries from export.json, e.g. the int8 variant's "session.disable_quant_qdq": "1",
    // which lets onnxruntime fold its DequantizeLinear weights into fp32 once, at load
    session_options: { extra: sessionConfig ?? {} },
    progress_callback: (p) => {
      if (p.status === "progress" && p.total) {
        loaded[p.file] = [p.loaded, p.total];
        const [done, total] = Object.values(loaded).reduce(([a, b], [c, d]) => [a + c, b + d], [0, 0]);
        self.postMessage({ type: "progress", loaded: done, total });
      }
    },
  });
  const eos = model.generation_config?.eos_token_id ?? [];
  stopIds = Array.isArray(eos) ? eos : [eos]; // Gemma 3: [1, 106], written by `mlx_bluey fuse`
  // generate() applies generation_config.suppress_tokens itself; reported so the page's state shows it
  const suppressTokens = model.generation_config?.suppress_tokens ?? [];
  // generation_config.json as loaded: it holds the sampling defaults `mlx_bluey fuse` wrote (the CLI's), which
  // the page's inputs start from (app.js)
  const generationConfig = JSON.parse(JSON.stringify(model.generation_config ?? {}));
  self.postMessage({ type: "ready", stopIds, suppressTokens, generationConfig, threads: env.backends.onnx.wasm.numThreads });
}

async function generate({ messages, options }) {
  const prompt = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false });
  self.postMessage({ type: "prompt", text: prompt });
  const inputs = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true });
  const streamer = new TextStreamer(tokenizer, {
    skip_prompt: true,
    skip_special_tokens: true,
    callback_function: (text) => self.postMessage({ type: "chunk", text }),
  });
  // put() gets the prompt first, then one call per new token: the times give prompt and decode speed apart
  const puts = [];
  const put = streamer.put.bind(streamer);
  streamer.put = (value) => {
    puts.push(performance.now());
    put(value);
    if (puts.length > 2) { // decode speed so far, from the first new token on (the page shows it live)
      const tokensPerSecond = (puts.length - 2) / ((puts[puts.length - 1] - puts[1]) / 1000);
      self.postMessage({ type: "rate", tokens: puts.length - 1, tokensPerSecond });
    }
  };
  stopper.reset();
  const started = performance.now();
  // min_new_tokens blocks every id of eos_token_id (Transformers.js' MinNewTokensLengthLogitsProcessor)
  // As the CLI (sampling.js): the repetition penalty over the reply's last 64 tokens (Transformers.js' own one,
  // turned off here, covers the whole conversation), then top-k -> top-p (Transformers.js ignores top_p).
  const processors = [];
  if (options.repetition_penalty && options.repetition_penalty !== 1) {
    processors.push(makeRepetitionProcessor(LogitsProcessor, options.repetition_penalty, REPETITION_WINDOW,
                                            inputs.input_ids.dims[1]));
  }
  if (options.do_sample) processors.push(makeNucleusProcessor(LogitsProcessor, options.top_k, options.top_p, 0));
  const output = await model.generate({ ...inputs, ...options, repetition_penalty: 1.0, eos_token_id: stopIds, streamer,
                                        stopping_criteria: stopper, logits_processor: processors });
  const seconds = (performance.now() - started) / 1000;
  const ids = Array.from(output.tolist()[0].slice(inputs.input_ids.dims[1]), Number);
  const stopped = ids.length > 0 && stopIds.includes(ids[ids.length - 1]);
  const kept = stopped ? ids.slice(0, -1) : ids; // a stop id as the first token leaves none: decode([]) throws
  const text = kept.length > 0 ? tokenizer.decode(kept, { skip_special_tokens: true }).trim() : "";
  const decoded = puts.length - 2; // tokens after the first new one
  const decodeTokensPerSecond = decoded > 0 ? decoded / ((puts[puts.length - 1] - puts[1]) / 1000) : null;
  const promptSeconds = puts.length > 1 ? (puts[1] - started) / 1000 : null; // prompt + first token
  self.postMessage({ type: "done", tokens: ids.length, stopped, text, seconds, decodeTokensPerSecond, promptSeconds,
                     promptTokens: inputs.input_ids.dims[1], options: { ...options, eos_token_id: stopIds } });
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "load") await load(data);
    else if (data.type === "generate") await generate(data);
    else if (data.type === "stop") stopper.interrupt();
  } catch (error) {
    self.postMessage({ type: "error", message: String(error?.message ?? error), during: data.type });
  }
};
