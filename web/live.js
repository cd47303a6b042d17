// Live panels: the event log (a prefix subscription on "", i.e. every key,
// newest first, capped, pausable) and the stats strip (refreshed each second).
import { eventOf } from "./conn.js";
import { $, h, formatDuration, formatNumber, formatRate, formatTime, preview, frameBatcher } from "./util.js";

export const LOG_CAP = 200;

export function createEventLog({ onSelect }) {
  const log = $("event-log");
  const empty = $("event-log-empty");
  const info = $("events-info");
  const pauseBtn = $("events-pause");

  let paused = false;
  let pending = []; // arrived, not yet drawn (newest last)
  let heldWhilePaused = 0;
  let total = 0;

  const draw = frameBatcher(() => {
    if (paused || pending.length === 0) return;
    const batch = pending.slice(-LOG_CAP);
    pending = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) frag.append(row(batch[i]));
    log.prepend(frag);
    while (log.childElementCount > LOG_CAP) log.lastElementChild.remove();
    empty.hidden = log.childElementCount > 0;
    renderInfo();
  });

  function row(entry) {
    const { ev, at } = entry;
    const kind = ev.event ?? "event";
    return h("li", { dataset: { event: kind, key: ev.key ?? "" } },
      h("time", { datetime: at.toISOString() }, formatTime(at)),
      h("span", { class: `ev ${kind}` }, kind),
      ev.key !== undefined
        ? h("button", { type: "button", class: "key-link", title: `Inspect ${ev.key}`, dataset: { key: ev.key } }, ev.key)
        : h("span", { class: "muted" }, "(all keys)"),
      h("span", { class: "rev" }, ev.rev !== undefined ? `r${ev.rev}` : ""),
      kind === "lagged"
        ? h("span", { class: "note" }, ev.synthetic
          ? "Reconnected: changes made while the link was down are not listed."
          : "The log fell behind the hub: some changes were skipped.")
        : ev.hasValue ? h("span", { class: "val" }, preview(ev.value, 120)) : null);
  }

  function renderInfo() {
    info.textContent = paused
      ? `paused · ${formatNumber(heldWhilePaused)} new`
      : `${formatNumber(total)} seen`;
  }

  log.addEventListener("click", (e) => {
    const b = e.target.closest(".key-link");
    if (b) onSelect(b.dataset.key);
  });
  pauseBtn.addEventListener("click", () => api.togglePause());
  $("events-clear").addEventListener("click", () => {
    log.replaceChildren();
    pending = [];
    heldWhilePaused = 0;
    empty.hidden = false;
    renderInfo();
  });

  const api = {
    add(raw) {
      const ev = eventOf(raw);
      total++;
      pending.push({ ev, at: new Date() });
      if (pending.length > LOG_CAP * 2) pending = pending.slice(-LOG_CAP);
      if (paused) {
        heldWhilePaused++;
        renderInfo();
      } else draw();
    },
    togglePause() {
      paused = !paused;
      pauseBtn.setAttribute("aria-pressed", String(paused));
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        heldWhilePaused = 0;
        draw();
      }
      renderInfo();
    },
    get paused() {
      return paused;
    },
  };
  renderInfo();
  return api;
}

/** Sum of memhub_requests_total in a Prometheus text exposition. */
export function requestsTotal(text) {
  let sum = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("memhub_requests_total{") || line.startsWith("memhub_requests_total ")) {
      const n = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (Number.isFinite(n)) {
        sum += n;
        seen = true;
      }
    }
  }
  return seen ? sum : undefined;
}

export function createStats({ hub, onStats, onError }) {
  const out = {
    keys: $("stat-keys"),
    connections: $("stat-connections"),
    subscriptions: $("stat-subscriptions"),
    rev: $("stat-rev"),
    ops: $("stat-ops"),
    writes: $("stat-writes"),
    locks: $("stat-locks"),
    uptime: $("stat-uptime"),
  };
  let prev; // { at, rev, requests }
  let timer;
  let running = false;
  let metricsOk = true;

  async function requests() {
    if (!metricsOk) return undefined;
    try {
      const res = await fetch("/metrics", { cache: "no-store" });
      if (!res.ok) {
        metricsOk = false;
        return undefined;
      }
      return requestsTotal(await res.text());
    } catch {
      return undefined;
    }
  }

  async function tick() {
    // While memhub.js reconnects, calls would only queue up behind it.
    if (running || !hub.connected) {
      if (!hub.connected) prev = undefined;
      return;
    }
    running = true;
    try {
      const [s, req] = await Promise.all([hub.stats(), requests()]);
      const at = performance.now();
      out.keys.textContent = formatNumber(s.keys);
      out.connections.textContent = formatNumber(s.connections);
      out.subscriptions.textContent = formatNumber(s.subscriptions);
      out.rev.textContent = formatNumber(s.rev);
      out.locks.textContent = s.locks_held === undefined ? "—" : formatNumber(s.locks_held);
      out.uptime.textContent = s.uptime_ms === undefined ? "—" : formatDuration(s.uptime_ms);
      if (prev) {
        const dt = (at - prev.at) / 1000;
        if (dt > 0) {
          out.writes.textContent = formatRate(Math.max(0, (s.rev - prev.rev) / dt));
          out.ops.textContent = req !== undefined && prev.requests !== undefined
            ? formatRate(Math.max(0, (req - prev.requests) / dt))
            : "—";
        }
      }
      prev = { at, rev: s.rev, requests: req };
      onStats?.(s);
    } catch (err) {
      onError?.(err);
    } finally {
      running = false;
    }
  }

  return {
    start() {
      tick();
      timer = setInterval(tick, 1000);
    },
    stop() {
      clearInterval(timer);
    },
    tick,
  };
}
