// Small DOM and formatting helpers shared by the dashboard's modules.

/** The element with this id (throws if the page lacks it, which is a bug). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard: no element #${id}`);
  return el;
}

/** Build an element: h("li", { class: "row", dataset: { key } }, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const encoder = new TextEncoder();

/** Bytes of a value's compact JSON (what the hub counts against its limits). */
export function jsonBytes(value) {
  return encoder.encode(JSON.stringify(value)).length;
}

export function formatBytes(n) {
  if (n === undefined || n === null) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** "1.2 s", "3 min 4 s", "2 h 5 min", "4 d 1 h". */
export function formatDuration(ms) {
  if (ms < 0) ms = 0;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function formatNumber(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 });
}

/** Per-second rates: one decimal below 100, none above. */
export function formatRate(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: n < 100 ? 1 : 0 });
}

export function formatTime(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false });
}

/** Compact JSON cut to at most `max` characters. */
export function preview(value, max = 80) {
  if (value === undefined) return "";
  const text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Text for an error shown to the user: a hub error's message and code. */
export function errorText(err) {
  if (err && typeof err === "object" && "code" in err && typeof err.code === "number") {
    return `${err.message} (${err.code})`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** True while focus is in a field where typed characters belong to the field. */
export function typingInField(event) {
  const t = event.target;
  if (!(t instanceof Element)) return false;
  return t.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']") !== null;
}

/** Run `fn` at most once per animation frame however often it is requested. */
export function frameBatcher(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

/** Restart a CSS animation class on an element (for the "changed" flash). */
export function flash(el, cls = "flash") {
  el.classList.remove(cls);
  void el.offsetWidth; // reflow so the animation starts again
  el.classList.add(cls);
  // Drop the class when done, or un-hiding the element would replay it.
  el.addEventListener("animationend", () => el.classList.remove(cls), { once: true });
}
