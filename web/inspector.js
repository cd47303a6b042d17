// The inspector: subscribes to the selected key and shows its value, rev,
// size and expiry, live. Also owns the editor and the delete confirmation.
import { snapshotOf, eventOf, keyMeta } from "./conn.js";
import { createEditor } from "./editor.js";
import { renderJson } from "./json-view.js";
import { $, jsonBytes, formatBytes, formatDuration, formatTime, errorText, flash, frameBatcher } from "./util.js";

export function createInspector({ hub, onSaved, onDeleted }) {
  const emptyView = $("inspector-empty");
  const body = $("inspector-body");
  const title = $("inspector-title");
  const stateBadge = $("inspector-state");
  const banner = $("inspector-banner");
  const pre = $("inspector-value");
  const metaRev = $("meta-rev");
  const metaSize = $("meta-size");
  const metaExpiry = $("meta-expiry");
  const metaUpdated = $("meta-updated");
  const editBtn = $("edit-key");
  const deleteBtn = $("delete-key");
  const copyBtn = $("copy-value");

  let key;
  let handle;
  let seq = 0;
  let current = { exists: false };
  let status = "live"; // live | deleted | expired | absent
  let expiresAt;
  let bytes;
  let metaSeq = 0;

  const editor = createEditor({
    hub,
    onSaved(k, value, rev) {
      if (k === key && rev !== undefined && (current.rev === undefined || rev > current.rev)) {
        apply({ exists: true, value, rev }, "update");
      }
      onSaved?.(k);
      editBtn.focus();
    },
    onOpen() {
      pre.hidden = true;
      editBtn.disabled = true;
    },
    onClose() {
      pre.hidden = false;
      editBtn.disabled = !current.exists;
    },
  });

  // A busy key can change thousands of times a second: draw at most once a
  // frame, and re-read its listing row (size, expiry) a few times a second.
  let pendingHow;
  const renderSoon = frameBatcher(() => {
    if (pendingHow === undefined) return;
    const how = pendingHow;
    pendingHow = undefined;
    render(how);
  });
  let metaTimer;
  let metaLast = 0;
  function metaSoon() {
    if (metaTimer) return;
    metaTimer = setTimeout(() => {
      metaTimer = undefined;
      metaLast = Date.now();
      refreshMeta();
    }, Math.max(0, 300 - (Date.now() - metaLast)));
  }

  function apply(state, how) {
    current = state;
    if (state.exists) status = "live";
    else status = how === "expire" ? "expired" : how === "delete" ? "deleted" : "absent";
    if (how === "update") {
      bytes = undefined; // until the listing row says, count it here
      pendingHow = how;
      renderSoon();
    } else {
      pendingHow = undefined;
      render(how);
    }
    if (how !== "snapshot" && status === "live") metaSoon();
    if (!state.exists) {
      expiresAt = undefined;
      bytes = undefined;
      renderMeta();
    }
  }

  function render(how) {
    stateBadge.className = "badge";
    banner.hidden = true;
    banner.className = "banner";
    if (status === "live") {
      stateBadge.textContent = "live";
      stateBadge.classList.add("ok");
      pre.classList.remove("gone");
      renderJson(pre, current.value);
      if (how === "update") {
        flash(pre);
        pre.dataset.changes = String(Number(pre.dataset.changes ?? 0) + 1);
        metaUpdated.textContent = `at ${formatTime(new Date())}`;
      }
    } else {
      const when = formatTime(new Date());
      if (status === "absent") {
        stateBadge.textContent = "absent";
        banner.textContent = "This key does not exist. It will show here as soon as a client creates it.";
        banner.classList.add("info");
        pre.replaceChildren();
      } else {
        stateBadge.textContent = status;
        stateBadge.classList.add("danger");
        banner.textContent = status === "expired"
          ? `This key expired at ${when}${current.rev ? ` (rev ${current.rev})` : ""}. Its last value is shown struck through.`
          : `This key was deleted at ${when}${current.rev ? ` (rev ${current.rev})` : ""}. Its last value is shown struck through.`;
        banner.classList.add("gone");
        pre.classList.add("gone");
        flash(banner);
      }
      banner.hidden = false;
    }
    metaRev.textContent = current.rev === undefined ? "—" : String(current.rev);
    editBtn.disabled = !current.exists || editor.isOpen;
    deleteBtn.disabled = !current.exists;
    copyBtn.disabled = !current.exists;
    renderMeta();
  }

  function renderMeta() {
    if (!current.exists) {
      metaSize.textContent = "—";
      metaExpiry.textContent = "—";
      return;
    }
    metaSize.textContent = formatBytes(bytes ?? jsonBytes(current.value));
    metaExpiry.textContent = expiresAt === undefined
      ? "none"
      : `in ${formatDuration(expiresAt - Date.now())} (${formatTime(new Date(expiresAt))})`;
  }

  async function refreshMeta() {
    const mine = ++metaSeq;
    const k = key;
    try {
      const meta = await keyMeta(hub, k);
      if (mine !== metaSeq || k !== key) return;
      expiresAt = meta?.expires_at_ms ?? undefined;
      bytes = meta?.bytes;
      renderMeta();
    } catch {
      // The listing is a nicety; the value itself is already shown.
    }
  }

  setInterval(() => {
    if (key !== undefined && expiresAt !== undefined && current.exists) renderMeta();
  }, 500);

  function onEvent(mine, raw) {
    if (mine !== seq) return;
    const ev = eventOf(raw);
    if (ev.event === "lagged") return; // the current state follows at once
    // Our own save may have shown this rev already. (A reconnect's synthetic
    // event is always taken: a restarted hub counts revs from 1 again.)
    if (!ev.synthetic && ev.event === "update" && ev.rev !== undefined && current.rev !== undefined && ev.rev <= current.rev) return;
    if (ev.event === "update") {
      apply({ exists: true, value: ev.value, rev: ev.rev }, "update");
      editor.noteRemote("update", ev.rev);
    } else if (ev.event === "delete" || ev.event === "expire") {
      apply({ exists: false, value: current.value, rev: ev.rev }, ev.event);
      editor.noteRemote(ev.event, ev.rev);
      onDeleted?.(key);
    }
  }

  async function select(k) {
    if (k === key) return;
    const mine = ++seq;
    const old = handle;
    handle = undefined;
    old?.unsubscribe().catch(() => {});
    editor.close();
    key = k;
    expiresAt = undefined;
    bytes = undefined;
    current = { exists: false };
    emptyView.hidden = true;
    body.hidden = false;
    title.textContent = k;
    metaUpdated.textContent = `none since ${formatTime(new Date())}`;
    pre.replaceChildren();
    pre.classList.remove("flash");
    pre.dataset.changes = "0";
    stateBadge.textContent = "loading…";
    stateBadge.className = "badge";
    try {
      const h = await hub.subscribe(k, (ev) => onEvent(mine, ev));
      if (mine !== seq) {
        h.unsubscribe().catch(() => {});
        return;
      }
      handle = h;
      apply(snapshotOf(h), "snapshot");
      refreshMeta();
    } catch (err) {
      if (mine !== seq) return;
      stateBadge.textContent = "error";
      banner.className = "banner gone";
      banner.textContent = `Could not subscribe: ${errorText(err)}`;
      banner.hidden = false;
    }
  }

  // Delete, confirmed in a <dialog>.
  const dialog = $("delete-dialog");
  const deleteError = $("delete-error");
  deleteBtn.addEventListener("click", () => api.askDelete());
  $("delete-cancel").addEventListener("click", () => dialog.close());
  $("delete-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const confirm = $("delete-confirm");
    confirm.disabled = true;
    try {
      await hub.delete(key);
      dialog.close();
    } catch (err) {
      if (err && err.code === -32001) dialog.close();
      else {
        deleteError.textContent = `Not deleted: ${errorText(err)}`;
        deleteError.hidden = false;
      }
    } finally {
      confirm.disabled = false;
    }
  });
  dialog.addEventListener("close", () => (deleteBtn.disabled ? pre : deleteBtn).focus());

  editBtn.addEventListener("click", () => api.edit());
  copyBtn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(JSON.stringify(current.value, null, 2));
      copyBtn.textContent = "Copied";
    } catch {
      copyBtn.textContent = "Copy failed";
    }
    setTimeout(() => { copyBtn.textContent = "Copy"; }, 1200);
  });

  const api = {
    select,
    get key() {
      return key;
    },
    edit() {
      if (key === undefined || !current.exists || editor.isOpen) return;
      editor.open(key, current, expiresAt);
    },
    askDelete() {
      if (key === undefined || !current.exists) return;
      $("delete-key-name").textContent = key;
      deleteError.hidden = true;
      dialog.showModal();
    },
    /** After a reconnect: take a fresh subscription for the selected key. */
    resubscribe() {
      const k = key;
      key = undefined;
      if (k !== undefined) select(k);
    },
  };
  return api;
}
