// The value editor: JSON validated as you type, saved with `if_rev` so a
// change made by another client in the meantime is caught and shown, with
// "Reload" (take theirs) and "Overwrite" (keep mine).
import { readKey } from "./conn.js";
import { $, errorText } from "./util.js";

/** Parse JSON text; { ok, value } or { ok: false, message } with line:column. */
export function parseJson(text) {
  if (text.trim() === "") return { ok: false, message: "Empty: type a JSON value (null, 1, \"text\", [], {} …)." };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    let message = err.message;
    const pos = /position (\d+)/.exec(message);
    if (pos && !/line \d/.test(message)) {
      const at = Number(pos[1]);
      const before = text.slice(0, at).split("\n");
      message += ` (line ${before.length}, column ${before[before.length - 1].length + 1})`;
    }
    return { ok: false, message };
  }
}

/** A TTL field's value: { ok, ttlMs? } (empty means no expiry). */
export function parseTtl(text) {
  const t = text.trim();
  if (t === "") return { ok: true, ttlMs: undefined };
  const n = Number(t);
  if (!Number.isSafeInteger(n) || n < 1) return { ok: false, message: "TTL must be a whole number of milliseconds, at least 1." };
  return { ok: true, ttlMs: n };
}

export function createEditor({ hub, onSaved, onOpen, onClose }) {
  const form = $("editor");
  const area = $("editor-value");
  const ttl = $("editor-ttl");
  const error = $("editor-error");
  const notice = $("editor-notice");
  const conflict = $("conflict");
  const conflictText = $("conflict-text");
  const save = $("editor-save");

  let key;
  let baseRev = 0;
  let busy = false;

  function validate() {
    const parsed = parseJson(area.value);
    const t = parseTtl(ttl.value);
    const msg = !parsed.ok ? parsed.message : !t.ok ? t.message : "";
    error.textContent = msg;
    error.hidden = msg === "";
    area.setAttribute("aria-invalid", String(!parsed.ok));
    ttl.setAttribute("aria-invalid", String(!t.ok));
    save.disabled = busy || msg !== "" || !conflict.hidden;
    return parsed.ok && t.ok ? { value: parsed.value, ttlMs: t.ttlMs } : undefined;
  }

  function setBusy(b) {
    busy = b;
    for (const el of form.querySelectorAll("button")) el.disabled = b;
    if (!b) validate();
  }

  async function write(ifRev) {
    const v = validate();
    if (!v) return;
    setBusy(true);
    try {
      const opts = {};
      if (ifRev !== undefined) opts.ifRev = ifRev;
      if (v.ttlMs !== undefined) opts.ttlMs = v.ttlMs;
      const res = await hub.update(key, v.value, opts);
      setBusy(false);
      api.close();
      onSaved(key, v.value, res?.rev);
    } catch (err) {
      setBusy(false);
      if (err && err.code === -32002) {
        showConflict(err.data?.rev ?? 0);
      } else {
        error.textContent = `Not saved: ${errorText(err)}`;
        error.hidden = false;
      }
    }
  }

  function showConflict(nowRev) {
    let text;
    if (nowRev === 0) text = `Not saved: another client deleted this key after you loaded rev ${baseRev}.`;
    else if (baseRev === 0) text = `Not saved: another client created this key (rev ${nowRev}) while you were editing.`;
    else text = `Not saved: another client changed this key. You edited rev ${baseRev}; the hub now holds rev ${nowRev}.`;
    conflictText.textContent = `${text} Reload their value (your edits are lost), or overwrite it with yours.`;
    conflict.hidden = false;
    notice.hidden = true;
    save.disabled = true;
    $("conflict-reload").focus();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (conflict.hidden) write(baseRev);
  });
  area.addEventListener("input", validate);
  ttl.addEventListener("input", validate);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (conflict.hidden) write(baseRev);
    } else if (e.key === "Escape") {
      e.preventDefault();
      api.close();
    }
  });
  $("editor-cancel").addEventListener("click", () => api.close());
  $("editor-format").addEventListener("click", () => {
    const parsed = parseJson(area.value);
    if (parsed.ok) area.value = JSON.stringify(parsed.value, null, 2);
    validate();
  });
  $("conflict-reload").addEventListener("click", async () => {
    setBusy(true);
    try {
      const now = await readKey(hub, key);
      baseRev = now.exists ? now.rev : 0;
      area.value = now.exists ? JSON.stringify(now.value, null, 2) : "";
      conflict.hidden = true;
      notice.textContent = now.exists
        ? `Reloaded rev ${now.rev}. Edit and save again.`
        : "The key no longer exists. Saving creates it again.";
      notice.hidden = false;
    } catch (err) {
      error.textContent = `Reload failed: ${errorText(err)}`;
      error.hidden = false;
    }
    setBusy(false);
    area.focus();
  });
  $("conflict-overwrite").addEventListener("click", () => {
    conflict.hidden = true;
    write(undefined);
  });

  const api = {
    get isOpen() {
      return !form.hidden;
    },
    /** Edit `key` whose state is `state` ({exists, value, rev}); `expiresAt` prefills the TTL. */
    open(k, state, expiresAt) {
      key = k;
      baseRev = state.exists ? state.rev : 0;
      area.value = state.exists ? JSON.stringify(state.value, null, 2) : "";
      ttl.value = expiresAt ? String(Math.max(1, Math.round(expiresAt - Date.now()))) : "";
      conflict.hidden = true;
      notice.hidden = true;
      form.hidden = false;
      setBusy(false);
      onOpen?.();
      area.focus();
    },
    close() {
      if (form.hidden) return;
      form.hidden = true;
      conflict.hidden = true;
      notice.hidden = true;
      error.hidden = true;
      onClose?.();
    },
    /** Another client changed the key while it is being edited. */
    noteRemote(kind, rev) {
      if (form.hidden || busy || !conflict.hidden) return;
      notice.textContent = kind === "update"
        ? `Another client changed this key (now rev ${rev}). Saving will ask what to do.`
        : `Another client ${kind === "expire" ? "let this key expire" : "deleted this key"}. Saving will ask what to do.`;
      notice.hidden = false;
    },
  };
  return api;
}
