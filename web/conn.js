// The dashboard's connection to its hub: the WebSocket URL, the access token
// (asked for once, kept in sessionStorage), the token's role, and the few
// shapes of results the rest of the dashboard relies on.
import { connect } from "./memhub.js";

const TOKEN_KEY = "memhub.dashboard.token";

/** ws://host/ws or wss://host/ws for the page's own hub. */
export function hubUrl(loc = location) {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

export function savedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || undefined;
  } catch {
    return undefined;
  }
}

export function saveToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage can be disabled; the token then lasts for this page only.
  }
}

/** True when the hub answers plain HTTP (so a failed upgrade was a refusal). */
async function hubIsUp() {
  try {
    const res = await fetch("/healthz", { cache: "no-store" });
    return res.ok;
  } catch {
    return false;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Connect, asking for a token while the hub refuses the upgrade, and find
 * the token's role.
 *
 * A browser sees a refused upgrade (HTTP 401 or 403) only as a failed
 * connection, so a failure while /healthz answers means "refused": the page
 * asks for a token. A failure while /healthz does not answer means the hub
 * is down: keep trying.
 *
 * The first connect fails fast (`connectRetry: 0`) so a refusal is told
 * from a slow start; a connection lost later is re-opened forever
 * (`maxRetry: Infinity`), once a second.
 *
 * `askToken({ rejected })` resolves with the token the user typed.
 * `onStatus(state)` reports "connecting" | "offline" | "auth".
 * `options` are passed to memhub.js's connect (onReconnect and the like).
 */
export async function openHub({ askToken, onStatus, options = {} }) {
  let token = savedToken();
  let delay = 500;
  for (;;) {
    onStatus("connecting");
    let hub;
    try {
      hub = await connect(hubUrl(), {
        connectRetry: 0,
        maxRetry: Infinity,
        retryDelayMs: 1000,
        ...options,
        token,
      });
    } catch (err) {
      if (await hubIsUp()) {
        onStatus("auth");
        const rejected = token !== undefined;
        saveToken(undefined);
        token = await askToken({ rejected });
        delay = 500;
      } else {
        onStatus("offline", err);
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
      continue;
    }
    saveToken(token);
    return { hub, token, role: await detectRole(hub) };
  }
}

/**
 * "write" or "read": `version` names the connection's role. A hub that does
 * not (an older one) is asked with an `unlock` of a lock nobody holds, which
 * changes nothing: a write token gets -32004 (not held), a read token -32010.
 */
export async function detectRole(hub) {
  const { role } = await hub.version();
  if (role === "write" || role === "read") return role;
  try {
    await hub.unlock("memhub.dashboard/role-probe", "00000000000000000000000000000000");
    return "write";
  } catch (err) {
    return err && err.code === -32010 ? "read" : "write";
  }
}

/** A key subscription's current state: { exists, value?, rev? }. */
export function snapshotOf(handle) {
  const s = handle && typeof handle === "object" && "snapshot" in handle ? handle.snapshot : handle;
  if (!s || typeof s !== "object") return { exists: false };
  const exists = "exists" in s ? Boolean(s.exists) : "value" in s;
  return exists ? { exists: true, value: s.value, rev: s.rev } : { exists: false, rev: s.rev };
}

/** A `keys` page: { keys: [{key, rev, bytes, expires_at_ms?}], next }. */
export function pageOf(res) {
  if (Array.isArray(res)) return { keys: res, next: null };
  return { keys: res.keys ?? [], next: res.next ?? null };
}

/** An event's fields whatever the client names them: { event, key, value?, rev? }. */
export function eventOf(ev) {
  return {
    event: ev.event ?? ev.type,
    key: ev.key,
    value: ev.value,
    rev: ev.rev,
    hasValue: "value" in ev,
    synthetic: Boolean(ev.synthetic),
  };
}

/** A key's state now: { exists, value?, rev? }. */
export async function readKey(hub, key) {
  try {
    const res = await hub.getWithRev(key);
    return { exists: true, value: res.value, rev: res.rev };
  } catch (err) {
    if (err && err.code === -32001) return { exists: false };
    throw err;
  }
}

/** The listing entry of one key ({key, rev, bytes, expires_at_ms?}), if present. */
export function keyMeta(hub, key) {
  return hub.keyInfo(key);
}
