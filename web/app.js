// memhub dashboard: wires the panels to one connection to the page's hub.
import { openHub, saveToken, savedToken, eventOf } from "./conn.js";
import { parseJson, parseTtl } from "./editor.js";
import { createInspector } from "./inspector.js";
import { createKeyList } from "./keys.js";
import { createEventLog, createStats } from "./live.js";
import { $, errorText, typingInField } from "./util.js";

const connEl = $("conn-status");
const connLabel = $("conn-label");
const LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Hub unreachable, retrying…",
  auth: "Token needed",
};

function setStatus(state) {
  if (connEl.dataset.state === state) return;
  connEl.dataset.state = state;
  connLabel.textContent = LABELS[state] ?? state;
}

/** Show the token form until the user submits a token. */
function askToken({ rejected }) {
  const dialog = $("token-dialog");
  const input = $("token-input");
  $("token-error").hidden = !rejected;
  input.value = "";
  return new Promise((resolve) => {
    const form = $("token-form");
    const onCancel = (e) => e.preventDefault(); // Esc: the page is useless without a token
    const onSubmit = (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) {
        input.focus();
        return;
      }
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(token);
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}

function setUpCreate(hub, select, keys) {
  const dialog = $("create-dialog");
  const form = $("create-form");
  const keyIn = $("create-key");
  const valueIn = $("create-value");
  const ttlIn = $("create-ttl");
  const error = $("create-error");
  const submit = $("create-submit");

  function check() {
    const parsed = parseJson(valueIn.value);
    const ttl = parseTtl(ttlIn.value);
    valueIn.setAttribute("aria-invalid", String(!parsed.ok));
    ttlIn.setAttribute("aria-invalid", String(!ttl.ok));
    const msg = !parsed.ok ? parsed.message : !ttl.ok ? ttl.message : "";
    error.textContent = msg;
    error.hidden = msg === "";
    return msg === "" ? { value: parsed.value, ttlMs: ttl.ttlMs } : undefined;
  }
  valueIn.addEventListener("input", check);
  ttlIn.addEventListener("input", check);
  $("create-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = keyIn.value;
    const v = check();
    if (!v) return;
    if (key === "") {
      error.textContent = "A key must not be empty.";
      error.hidden = false;
      keyIn.focus();
      return;
    }
    submit.disabled = true;
    try {
      const opts = { ifRev: 0 };
      if (v.ttlMs !== undefined) opts.ttlMs = v.ttlMs;
      await hub.update(key, v.value, opts);
      dialog.close();
      keys.refresh();
      select(key);
    } catch (err) {
      error.textContent = err && err.code === -32002
        ? `“${key}” already exists (rev ${err.data?.rev}). Select it in the list to edit it.`
        : `Not created: ${errorText(err)}`;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return () => {
    error.hidden = true;
    keyIn.value = "";
    valueIn.value = "{}";
    ttlIn.value = "";
    valueIn.removeAttribute("aria-invalid");
    ttlIn.removeAttribute("aria-invalid");
    dialog.showModal();
    keyIn.focus();
  };
}

async function main() {
  let keys;
  let inspector;
  const { hub, token, role } = await openHub({
    askToken,
    onStatus: setStatus,
    options: {
      onReconnect() {
        setStatus("connected");
        keys?.refresh();
      },
    },
  });
  setStatus("connected");
  // memhub.js reconnects by itself (and resumes subscriptions); mirror its state.
  setInterval(() => {
    setStatus(hub.connected ? "connected" : hub.reconnecting ? "reconnecting" : "offline");
  }, 250);

  const readOnly = role === "read";
  // Edit controls stay hidden (class in index.html) until the role is known.
  document.body.classList.toggle("read-only", readOnly);
  document.body.dataset.role = role;
  $("role-badge").hidden = !readOnly;
  if (token !== undefined || savedToken() !== undefined) {
    const forget = $("forget-token");
    forget.hidden = false;
    forget.addEventListener("click", () => {
      saveToken(undefined);
      location.reload();
    });
  }
  hub.version().then((v) => {
    $("hub-version").textContent = `v${v.version} · protocol ${v.protocol}`;
  }).catch(() => {});

  const select = (key) => {
    keys.setSelected(key);
    inspector.select(key);
    history.replaceState(null, "", `#key=${encodeURIComponent(key)}`);
  };
  keys = createKeyList({ hub, onSelect: select });
  inspector = createInspector({ hub, onSaved: () => keys.refresh() });
  const log = createEventLog({ onSelect: select });

  await hub.subscribePrefix("", (raw) => {
    log.add(raw);
    const ev = eventOf(raw);
    keys.noteEvent(ev.event === "lagged" ? undefined : ev.key);
  });

  const stats = createStats({
    hub,
    onStats(s) {
      keys.setTotal(s.keys);
    },
  });
  await keys.reload();
  stats.start();

  const openCreate = setUpCreate(hub, select, keys);
  $("new-key").addEventListener("click", openCreate);

  // #key=… selects a key: on load, and when the address is edited.
  const selectFromHash = () => {
    const m = /^#key=(.+)$/.exec(location.hash);
    if (!m) return;
    let key;
    try {
      key = decodeURIComponent(m[1]);
    } catch {
      return;
    }
    if (key !== inspector.key) select(key);
  };
  selectFromHash();
  window.addEventListener("hashchange", selectFromHash);

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    if (document.querySelector("dialog[open]") || typingInField(e)) return;
    switch (e.key) {
      case "/":
        $("prefix-filter").focus();
        $("prefix-filter").select();
        break;
      case "n":
        if (readOnly) return;
        openCreate();
        break;
      case "e":
        if (readOnly) return;
        inspector.edit();
        break;
      case "Delete":
        if (readOnly) return;
        inspector.askDelete();
        break;
      case "p":
        log.togglePause();
        break;
      case "[":
        keys.prevPage();
        break;
      case "]":
        keys.nextPage();
        break;
      default:
        return;
    }
    e.preventDefault();
  });

  document.body.dataset.ready = "true";
}

main().catch((err) => {
  setStatus("offline");
  connLabel.textContent = `Error: ${errorText(err)}`;
  console.warn("memhub dashboard failed to start", err);
});
