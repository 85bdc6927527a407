// Text rules shared with the Python side (mlx_bluey/text.py): tests/test_text.py runs both on the same cases.

// A sentence ends at . ! ? or … followed by closing quotes or brackets, then a space or the end.
export const SENTENCE_END = /[.!?…]["'”’)\]]*(?=\s|$)/g;

// Index just past the last finished sentence in text, or 0 if there is none.
export function lastSentenceEnd(text) {
  let end = 0;
  for (const m of text.matchAll(SENTENCE_END)) end = m.index + m[0].length;
  return end;
}

// Text cut back to its last finished sentence (or last whole word), as generation.py's trim_to_sentence.
export function trimToSentence(text) {
  const stripped = text.trimEnd();
  let end = lastSentenceEnd(stripped);
  if (end === stripped.length) return stripped;
  if (end === 0) {
    const space = stripped.lastIndexOf(" ");
    end = space > 0 ? space : stripped.length;
  }
  return stripped.slice(0, end).trimEnd();
}
