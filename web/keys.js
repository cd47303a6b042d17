// The key list: one page of `keys` at a time (never the whole hub), a prefix
// filter, previous/next paging by cursor, and a count.
import { pageOf } from "./conn.js";
import { $, h, formatBytes, formatDuration, formatNumber, formatTime, errorText } from "./util.js";

export const PAGE_SIZE = 100;

export function createKeyList({ hub, onSelect }) {
  const list = $("key-list");
  const empty = $("key-list-empty");
  const count = $("key-count");
  const pageInfo = $("page-info");
  const prev = $("prev-page");
  const next = $("next-page");
  const filter = $("prefix-filter");

  let prefix = "";
  let cursors = [undefined]; // cursors[i]: the `after` of page i
  let pageIndex = 0;
  let page = { keys: [], next: null };
  let selected;
  let total; // stats.keys
  let seq = 0;
  let refreshTimer;
  let refreshing = false;
  let refreshAgain = false;
  let lastRefresh = 0;

  async function load(index) {
    const mine = ++seq;
    try {
      const res = pageOf(await hub.keys({ prefix: prefix || undefined, after: cursors[index], limit: PAGE_SIZE }));
      if (mine !== seq) return;
      if (res.keys.length === 0 && index > 0) {
        // Everything on this page went away: step back.
        cursors = cursors.slice(0, index);
        return load(index - 1);
      }
      pageIndex = index;
      page = res;
      cursors = cursors.slice(0, index + 1);
      if (res.next !== null) cursors[index + 1] = res.next;
      render();
    } catch (err) {
      if (mine !== seq) return;
      list.replaceChildren();
      empty.hidden = false;
      empty.textContent = `Could not list keys: ${errorText(err)}`;
    }
  }

  function render() {
    const focused = document.activeElement?.closest?.(".key-row")?.dataset.key;
    const now = Date.now();
    const rows = page.keys.map((k) => {
      const ttl = k.expires_at_ms !== undefined && k.expires_at_ms !== null
        ? h("span", { class: "m ttl", title: `expires in ${formatDuration(k.expires_at_ms - now)} (${new Date(k.expires_at_ms).toLocaleString()})` }, `exp ${formatTime(new Date(k.expires_at_ms))}`)
        : null;
      return h("li", {},
        h("button", {
          type: "button",
          class: "key-row",
          dataset: { key: k.key },
          "aria-current": k.key === selected ? "true" : undefined,
          title: k.key,
        },
        h("span", { class: "k" }, k.key),
        ttl,
        h("span", { class: "m" }, `r${k.rev} · ${formatBytes(k.bytes)}`)));
    });
    list.replaceChildren(...rows);
    setTabStop(rowFor(selected) ?? list.querySelector(".key-row"));
    empty.hidden = rows.length > 0;
    empty.textContent = prefix ? `No keys start with “${prefix}”.` : "No keys yet.";
    if (focused !== undefined) {
      const again = rowFor(focused);
      if (again) {
        setTabStop(again);
        again.focus();
      }
    }

    const first = pageIndex * PAGE_SIZE + 1;
    const last = pageIndex * PAGE_SIZE + page.keys.length;
    pageInfo.textContent = page.keys.length ? `Page ${pageIndex + 1} · ${formatNumber(first)}–${formatNumber(last)}` : "";
    prev.disabled = pageIndex === 0;
    next.disabled = page.next === null;
    renderCount();
  }

  function renderCount() {
    if (!prefix) {
      count.textContent = total === undefined ? "" : `${formatNumber(total)} total`;
      return;
    }
    const seen = pageIndex * PAGE_SIZE + page.keys.length;
    count.textContent = page.next === null ? `${formatNumber(seen)} matching` : `${formatNumber(seen)}+ matching`;
  }

  // One Tab stop for the whole list (the selected row, else the first);
  // the arrow keys move within it.
  function setTabStop(target) {
    for (const b of list.querySelectorAll(".key-row")) b.tabIndex = b === target ? 0 : -1;
  }

  function rowFor(key) {
    for (const b of list.querySelectorAll(".key-row")) if (b.dataset.key === key) return b;
    return undefined;
  }

  list.addEventListener("click", (e) => {
    const row = e.target.closest(".key-row");
    if (row) onSelect(row.dataset.key);
  });
  list.addEventListener("keydown", (e) => {
    const row = e.target.closest(".key-row");
    if (!row) return;
    const rows = [...list.querySelectorAll(".key-row")];
    const i = rows.indexOf(row);
    let to;
    if (e.key === "ArrowDown") to = rows[i + 1];
    else if (e.key === "ArrowUp") to = rows[i - 1];
    else if (e.key === "Home") to = rows[0];
    else if (e.key === "End") to = rows[rows.length - 1];
    else return;
    e.preventDefault();
    if (to) {
      setTabStop(to);
      to.focus();
    }
  });
  prev.addEventListener("click", () => api.prevPage());
  next.addEventListener("click", () => api.nextPage());
  let filterTimer;
  filter.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => api.setPrefix(filter.value), 200);
  });
  $("filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(filterTimer);
    api.setPrefix(filter.value);
    list.querySelector(".key-row")?.focus();
  });
  $("refresh-keys").addEventListener("click", () => api.refresh());

  const api = {
    reload() {
      cursors = [undefined];
      return load(0);
    },
    refresh() {
      return load(pageIndex);
    },
    nextPage() {
      if (page.next !== null) return load(pageIndex + 1);
      return undefined;
    },
    prevPage() {
      if (pageIndex > 0) return load(pageIndex - 1);
      return undefined;
    },
    setPrefix(p) {
      if (p === prefix) return undefined;
      prefix = p;
      if (filter.value !== p) filter.value = p;
      return api.reload();
    },
    setSelected(key) {
      selected = key;
      for (const b of list.querySelectorAll(".key-row")) {
        b.setAttribute("aria-current", b.dataset.key === key ? "true" : "false");
      }
      const row = rowFor(key);
      if (row) setTabStop(row);
    },
    setTotal(n) {
      total = n;
      renderCount();
    },
    /** A change event from the hub: reload this page if it could show it. */
    noteEvent(key) {
      if (key === undefined) {
        scheduleRefresh();
        return;
      }
      if (!key.startsWith(prefix)) return;
      const after = cursors[pageIndex];
      const lastKey = page.keys.length ? page.keys[page.keys.length - 1].key : undefined;
      if (after !== undefined && key <= after) return;
      if (page.next !== null && lastKey !== undefined && key > lastKey) return;
      scheduleRefresh();
    },
  };

  // At most a few reloads a second however busy the hub is.
  function scheduleRefresh() {
    if (refreshTimer) return;
    const wait = Math.max(0, 250 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(runRefresh, wait);
  }
  async function runRefresh() {
    refreshTimer = undefined;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    lastRefresh = Date.now();
    try {
      await load(pageIndex);
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh();
      }
    }
  }

  return api;
}
