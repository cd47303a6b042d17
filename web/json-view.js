// Pretty-printed, syntax-coloured JSON for the inspector.
const TOKEN = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
const HIGHLIGHT_LIMIT = 200_000;

/** Fill `pre` with `value` as indented JSON; colour it unless it is huge. */
export function renderJson(pre, value) {
  const text = JSON.stringify(value, null, 2) ?? "";
  if (text.length > HIGHLIGHT_LIMIT) {
    pre.textContent = text;
    return;
  }
  const out = [];
  let last = 0;
  for (const m of text.matchAll(TOKEN)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    const span = document.createElement("span");
    if (m[1] !== undefined) {
      span.className = m[2] ? "jk" : "js";
      span.textContent = m[1];
      out.push(span);
      if (m[2]) out.push(document.createTextNode(m[2]));
    } else {
      span.className = m[3] !== undefined ? "jn" : "jl";
      span.textContent = m[0];
      out.push(span);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  pre.replaceChildren(...out);
}
