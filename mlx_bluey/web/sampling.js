// Top-k, then top-p over what top-k kept, then min-p: the candidates mlx_bluey/sampling.py keeps.
// Transformers.js 4.3.1 applies temperature and samples among the top_k logits, but never applies
// top_p (its TopPLogitsWarper has no _call), so the worker runs this after temperature; the
// multinomial sampler then sees -Infinity for every dropped candidate.

// Indices of the k largest values, best first (ties: lower index first).
function topIndices(values, k) {
  const better = (a, b) => values[a] > values[b] || (values[a] === values[b] && a < b);
  if (k > 256) {
    // top-k off (or huge): one sort of every index. The insertion below costs up to k steps per
    // value, 262,144 x 262,144 for Gemma's vocabulary.
    const all = Array.from(values.keys());
    all.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
    return all.slice(0, k);
  }
  const best = []; // sorted best first, at most k long
  for (let i = 0; i < values.length; i++) {
    // i grows, so a value equal to the worst kept one is not better either (nor is NaN): skip both
    if (best.length === k && !(values[i] > values[best[k - 1]])) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && better(i, best[at - 1])) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

// The token ids sampling may pick from logits (already divided by the temperature).
// topK = 0, topP >= 1 and minP = 0 turn each filter off.
export function keptIds(logits, topK, topP, minP) {
  const k = topK > 0 ? Math.min(topK, logits.length) : logits.length;
  const ids = topIndices(logits, k);
  const top = logits[ids[0]];
  const weights = ids.map((i) => Math.exp(logits[i] - top));
  const total = weights.reduce((a, b) => a + b, 0);
  const kept = [];
  let before = 0; // renormalised mass of the candidates before this one
  for (let j = 0; j < ids.length; j++) {
    const p = weights[j] / total;
    if (topP > 0 && topP < 1 && before >= topP) break;
    if (minP > 0 && weights[j] < minP) break; // p / p(best) = weights[j] / weights[0] = weights[j]
    kept.push(ids[j]);
    before += p;
  }
  return kept;
}

// Every logit but those of `ids` -> -Infinity: one fill of the typed array, then the kept values back (a Set
// lookup for each of Gemma's 262,144 ids, the earlier way, was most of this processor's time).
export function keepOnly(data, ids) {
  const values = ids.map((i) => data[i]);
  data.fill(-Infinity);
  ids.forEach((id, j) => { data[id] = values[j]; });
  return data;
}

// A Transformers.js logits processor (pass the library's LogitsProcessor class in).
export function makeNucleusProcessor(LogitsProcessor, topK, topP, minP) {
  return new (class extends LogitsProcessor {
    _call(inputIds, logits) {
      for (let b = 0; b < inputIds.length; b++) {
        keepOnly(logits[b].data, keptIds(logits[b].data, topK, topP, minP));
      }
      return logits;
    }
  })();
}

// The CLI's repetition penalty (mlx_bluey/sampling.py make_repetition_penalty): every id among the reply's
// last `window` tokens (`ids` is the reply alone, the prompt left out) has its logit divided by `penalty` when
// positive and multiplied when negative, once however often it occurs. The prompt stays out because its last
// tokens are the system message's facts, which the reply should repeat. Transformers.js' own
// RepetitionPenaltyLogitsProcessor penalises every id of the whole conversation, so the worker turns that one
// off and runs this.
export function penalise(logits, ids, penalty, window) {
  for (const id of new Set(ids.slice(-window).map(Number))) {
    logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
  }
  return logits;
}

// `start`: the prompt's length in tokens; generate() hands the processor the prompt and the reply so far.
export function makeRepetitionProcessor(LogitsProcessor, penalty, window, start) {
  return new (class extends LogitsProcessor {
    _call(inputIds, logits) {
      for (let b = 0; b < inputIds.length; b++) penalise(logits[b].data, inputIds[b].slice(start), penalty, window);
      return logits;
    }
  })();
}
