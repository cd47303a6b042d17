// memhub.js: the JavaScript client of memhub, one dependency-free ES module.
//
// The hub serves this file at /memhub.js. In a browser:
//
//     import { connect } from "/memhub.js";
//     const hub = await connect();                 // ws(s)://<this page's host>/ws
//
// In Node.js 18+ (no global WebSocket before Node 22), pass one:
//
//     import WebSocket from "ws";
//     import { connect } from "./memhub.js";
//     const hub = await connect("ws://127.0.0.1:18813/ws", { WebSocket });
//
// The wire protocol is PROTOCOL.md / docs/protocol.md; the guide is
// docs/javascript.md. The semantics mirror the Rust client (src/client):
// one multiplexed socket, calls routed by id, automatic reconnect that
// re-subscribes every live subscription and yields one synthesized event for
// what changed while the link was down, locks held on sockets of their own.

/** The wire protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * Error codes a {@link MemhubError} can carry. Numbers are the hub's JSON-RPC
 * error codes; strings are failures on the client's side.
 * @readonly
 */
export const ErrorCode = Object.freeze({
  /** -32700: the hub could not parse a frame. */
  PARSE_ERROR: -32700,
  /** -32600: not a valid JSON-RPC request. */
  INVALID_REQUEST: -32600,
  /** -32601: unknown method. */
  METHOD_NOT_FOUND: -32601,
  /** -32602: bad params (bad key, value too large, ttl_ms 0, malformed ops, …). */
  INVALID_PARAMS: -32602,
  /** -32603: internal error of the hub. */
  INTERNAL_ERROR: -32603,
  /** -32001: no value exists for the key; `data: {key}`. */
  NOT_FOUND: -32001,
  /** -32002: `ifRev` did not match; `data: {rev}` (the current rev, 0 if absent). */
  REV_MISMATCH: -32002,
  /** -32003: the lock was not acquired within `waitMs`; `data: {name}`. */
  LOCK_TIMEOUT: -32003,
  /** -32004: that token does not hold the lock; `data: {name}`. */
  LOCK_NOT_HELD: -32004,
  /** -32005: a JSON Patch op failed, nothing applied; `data: {op_index}`. */
  PATCH_FAILED: -32005,
  /** -32006: not a number, overflow or non-finite result of `incr`; `data: {key}`. */
  NOT_A_NUMBER: -32006,
  /** -32010: the connection's token (read role) may not call this method; `data: {method}`. */
  FORBIDDEN: -32010,
  /** -32011: a resource limit was exceeded; `data: {limit, max}`. */
  LIMIT_EXCEEDED: -32011,
  /** The hub could not be reached or refused the WebSocket (`data.status`: the HTTP status when known). */
  CONNECT_FAILED: "connect failed",
  /** The connection dropped while the call was in flight; the call may or may not have run. */
  DISCONNECTED: "disconnected",
  /** The client was closed with `close()`. */
  CLOSED: "closed",
  /** No answer within `requestTimeoutMs`. */
  TIMEOUT: "timeout",
  /** The hub speaks another protocol version (see the `ignoreVersion` option). */
  PROTOCOL: "protocol",
});

/**
 * Every failure of this client. `code` is a number for an error the hub
 * answered (see {@link ErrorCode}: -32001 not found, -32002 rev mismatch, …)
 * or a string for a client-side failure ("connect failed", "disconnected",
 * "closed", "timeout", "protocol"). `data` is the hub's error data, if any.
 */
export class MemhubError extends Error {
  /**
   * @param {number|string} code
   * @param {string} message
   * @param {*} [data]
   */
  constructor(code, message, data) {
    super(message);
    this.name = "MemhubError";
    /** @type {number|string} */
    this.code = code;
    /** @type {*} */
    this.data = data;
  }
}

const DEFAULTS = Object.freeze({
  maxRetry: 4,
  retryDelayMs: 3000,
  requestTimeoutMs: 30000,
});

const OPEN = 1;

// ---------------------------------------------------------------- helpers

function wsUrl(url) {
  const loc = globalThis.location;
  if (url === undefined || url === null || url === "") {
    if (!loc || !loc.host) {
      throw new MemhubError(ErrorCode.CONNECT_FAILED, "connect() needs a URL such as ws://127.0.0.1:18813/ws outside a browser page");
    }
    url = "/ws";
  }
  let u;
  try {
    u = loc && loc.href ? new URL(String(url), loc.href) : new URL(String(url));
  } catch (e) {
    throw new MemhubError(ErrorCode.CONNECT_FAILED, `bad hub URL ${JSON.stringify(String(url))}: expected ws://HOST:PORT/ws`);
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new MemhubError(ErrorCode.CONNECT_FAILED, `bad hub URL ${JSON.stringify(String(url))}: the scheme must be ws:, wss:, http: or https:`);
  }
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/ws";
  u.hash = "";
  return u.toString();
}

function withToken(url, token) {
  if (token === undefined || token === null || token === "") return url;
  const sep = url.includes("?") ? "&" : "?";
  return `${url}${sep}token=${encodeURIComponent(String(token))}`;
}

function textOf(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}

function jsonEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !jsonEqual(a[k], b[k])) return false;
  }
  return true;
}

function snapshotOf(result) {
  const snap = { exists: !!result.exists };
  if (result.exists) {
    snap.value = result.value;
    snap.rev = result.rev;
  }
  return snap;
}

function refusal(status, where) {
  if (status === 401) {
    return `the hub at ${where} refused the connection (HTTP 401): it requires an access token and the token given is missing or wrong; pass the right one as options.token`;
  }
  if (status === 403) {
    return `the hub at ${where} refused the connection (HTTP 403): this page's origin is not allowed (see --allow-origin), or protected mode refuses clients from other machines until a token is configured`;
  }
  if (status === 503) {
    return `the hub at ${where} refused the connection (HTTP 503): it already has its maximum number of connections`;
  }
  return `the hub at ${where} refused the WebSocket upgrade (HTTP ${status})`;
}

/** Opens one WebSocket; resolves once it is open. */
function openSocket(WS, url, display, wsOptions, timeoutMs) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = wsOptions === undefined ? new WS(url) : new WS(url, undefined, wsOptions);
    } catch (e) {
      reject(new MemhubError(ErrorCode.CONNECT_FAILED, `cannot connect to ${display}: ${e && e.message ? e.message.split(url).join(display) : e}`));
      return;
    }
    let settled = false;
    let detail = "";
    let status;
    const finish = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.onopen = ws.onerror = ws.onclose = null;
      if (err) {
        ws.onerror = () => {};
        try {
          ws.close();
        } catch {
          /* not open yet */
        }
        reject(err);
      } else {
        resolve(ws);
      }
    };
    const fail = () => {
      if (status !== undefined) {
        const auth = status === 401 || status === 403;
        finish(new MemhubError(ErrorCode.CONNECT_FAILED, refusal(status, display), { status, auth }));
      } else {
        finish(
          new MemhubError(
            ErrorCode.CONNECT_FAILED,
            `cannot connect to ${display}${detail ? `: ${detail}` : ""} (is the hub running? A hub with tokens refuses a missing or wrong token with HTTP 401 and a foreign page origin with 403, which browsers do not report)`,
          ),
        );
      }
    };
    const timer = setTimeout(() => {
      detail = `no answer within ${timeoutMs} ms`;
      fail();
    }, timeoutMs);
    ws.onopen = () => finish(null);
    ws.onerror = (ev) => {
      const m = ev && (ev.message || (ev.error && ev.error.message));
      if (m) {
        detail = String(m).split(url).join(display);
        const s = /Unexpected server response: (\d+)/.exec(detail);
        if (s) status = Number(s[1]);
      }
      fail();
    };
    ws.onclose = (ev) => {
      if (!detail && ev && ev.code) detail = `closed with code ${ev.code}`;
      fail();
    };
  });
}

function errorOf(err) {
  if (!err || typeof err !== "object") return new MemhubError(ErrorCode.INTERNAL_ERROR, "malformed error from the hub");
  return new MemhubError(err.code, typeof err.message === "string" ? err.message : `the hub answered error ${err.code}`, err.data);
}

// ---------------------------------------------------------------- Link

/** One live WebSocket: pending requests by id, and hub sub ids → handles. */
class Link {
  constructor(ws, onLost) {
    this.ws = ws;
    this.pending = new Map();
    this.routes = new Map();
    this.alive = true;
    this.closedByClient = false;
    this.lateSubscribes = new Set();
    this.nextId = 0;
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    ws.onmessage = (ev) => this.onText(textOf(ev.data));
    ws.onerror = () => {};
    ws.onclose = () => {
      this.resolveClosed();
      if (this.failAll(ErrorCode.DISCONNECTED, "the connection to the hub closed before it answered") && onLost) onLost(this);
    };
  }

  failAll(code, why) {
    const was = this.alive;
    this.alive = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new MemhubError(code, why));
    }
    return was;
  }

  close() {
    const was = this.alive;
    this.closedByClient = true;
    this.failAll(ErrorCode.CLOSED, "the client was closed");
    if (was) {
      try {
        this.ws.close(1000);
      } catch {
        /* already closing */
      }
    }
    return this.closedPromise;
  }

  call(method, params, timeoutMs, sub) {
    return new Promise((resolve, reject) => {
      if (!this.alive || this.ws.readyState !== OPEN) {
        reject(
          this.closedByClient
            ? new MemhubError(ErrorCode.CLOSED, "the client was closed")
            : new MemhubError(ErrorCode.DISCONNECTED, "not connected to the hub"),
        );
        return;
      }
      const id = ++this.nextId;
      const text = JSON.stringify({ jsonrpc: "2.0", id, method, params: params || {} });
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          // A subscribe answered after its caller gave up must not leave a
          // subscription behind on the hub.
          if (sub) this.lateSubscribes.add(id);
          reject(new MemhubError(ErrorCode.TIMEOUT, `the hub did not answer ${method} within ${timeoutMs} ms`));
        }
      }, Math.max(0, timeoutMs));
      this.pending.set(id, { resolve, reject, timer, sub });
      try {
        this.ws.send(text);
      } catch (e) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new MemhubError(ErrorCode.DISCONNECTED, `could not send to the hub: ${e && e.message}`));
      }
    });
  }

  notify(method, params) {
    if (!this.alive) return;
    try {
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", method, params }));
    } catch {
      /* the link is going down; the hub drops the subscription with it */
    }
  }

  onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (Array.isArray(msg)) {
      for (const m of msg) this.onMessage(m);
    } else {
      this.onMessage(msg);
    }
  }

  onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.method === "event") {
      const params = msg.params || {};
      const sub = this.routes.get(params.sub);
      if (sub) sub._deliver(eventOf(params));
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) {
      if (this.lateSubscribes.delete(msg.id) && msg.result && typeof msg.result.sub === "number") {
        this.notify("unsubscribe", { sub: msg.result.sub });
      }
      return;
    }
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.error !== undefined) {
      p.reject(errorOf(msg.error));
      return;
    }
    const result = msg.result === undefined ? null : msg.result;
    // Register a subscription's route before the next frame is handled, so
    // none of its events can be missed.
    if (p.sub && result && typeof result.sub === "number") {
      p.sub.state._attach(this, result, p.sub.mode);
    }
    p.resolve(result);
  }
}

function eventOf(params) {
  const ev = { event: params.event };
  if (params.key !== undefined) ev.key = params.key;
  if (Object.prototype.hasOwnProperty.call(params, "value")) ev.value = params.value;
  if (params.rev !== undefined) ev.rev = params.rev;
  return ev;
}

// ---------------------------------------------------------------- Subscription

/**
 * A live subscription, returned by {@link MemhubClient#subscribe} and
 * {@link MemhubClient#subscribePrefix}. Events go to the `onEvent` callback
 * given to `subscribe` and/or to `for await (const ev of sub)`. It survives
 * reconnects (see docs/javascript.md); it ends when `unsubscribe()` is
 * called, the client is closed, or reconnecting gives up.
 */
export class Subscription {
  /** @hideconstructor */
  constructor(client, watch, onEvent) {
    /** What it watches: `{key}` or `{prefix}`. */
    this.watch = watch;
    /** The watched key (key subscriptions), else undefined. */
    this.key = watch.key;
    /** The watched prefix (prefix subscriptions), else undefined. */
    this.prefix = watch.prefix;
    /**
     * The key's state when the subscription started, taken atomically with
     * it: `{exists: true, value, rev}` or `{exists: false}`. Events follow
     * from there. `null` for a prefix subscription (list with `keys`).
     * @type {{exists: boolean, value?: *, rev?: number} | null}
     */
    this.snapshot = null;
    this._client = client;
    this._onEvent = typeof onEvent === "function" ? onEvent : null;
    this._buffer = !this._onEvent;
    this._queue = [];
    this._waiters = [];
    this._ended = false;
    this._link = null;
    this._serverSub = 0;
    this._established = false;
    this._last = { exists: false };
    this._id = 0;
    /** Resolves once the subscription has ended (no more events). @type {Promise<void>} */
    this.ended = new Promise((resolve) => {
      this._resolveEnded = resolve;
    });
  }

  /**
   * The last state this subscription reported for its key (the snapshot,
   * then each event applied): `{exists, value?, rev?}`; `null` for a prefix.
   * @type {{exists: boolean, value?: *, rev?: number} | null}
   */
  get state() {
    return this.key === undefined ? null : { ...this._last };
  }

  /** True once the subscription has ended. */
  get closed() {
    return this._ended;
  }

  _params() {
    return this.key !== undefined ? { key: this.key } : { prefix: this.prefix };
  }

  _attach(link, result, mode) {
    if (this._ended) {
      // Unsubscribed while its subscribe was in flight.
      link.notify("unsubscribe", { sub: result.sub });
      return;
    }
    this._link = link;
    this._serverSub = result.sub;
    link.routes.set(result.sub, this);
    if (mode.initial) {
      if (this.key !== undefined) {
        this.snapshot = snapshotOf(result);
        this._last = { ...this.snapshot };
      }
    } else {
      this._resume(this.key !== undefined ? snapshotOf(result) : null, mode.sameEpoch);
    }
    this._established = true;
  }

  /** After a reconnect: one event from what the consumer last heard to `fresh`. */
  _resume(fresh, sameEpoch) {
    if (this.key === undefined) {
      // A prefix cannot tell what it missed: tell the consumer to re-list.
      this._deliver({ event: "lagged", synthetic: true });
      return;
    }
    const last = this._last;
    const changed =
      last.exists !== fresh.exists || !jsonEqual(last.value, fresh.value) || (sameEpoch && fresh.exists && last.rev !== fresh.rev);
    if (!changed) {
      this._last = fresh;
      return;
    }
    if (fresh.exists) {
      this._deliver({ event: "update", key: this.key, value: fresh.value, rev: fresh.rev, synthetic: true });
    } else {
      this._deliver({ event: "delete", key: this.key, synthetic: true });
    }
  }

  _deliver(ev) {
    if (this._ended) return;
    if (this.key !== undefined) {
      if (ev.event === "update") this._last = { exists: true, value: ev.value, rev: ev.rev };
      else if (ev.event === "delete" || ev.event === "expire") {
        this._last = ev.rev === undefined ? { exists: false } : { exists: false, rev: ev.rev };
      }
    }
    if (this._onEvent) {
      try {
        this._onEvent(ev);
      } catch (e) {
        // Report like any event handler would, without breaking the socket.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
    if (this._buffer) {
      const w = this._waiters.shift();
      if (w) w({ value: ev, done: false });
      else this._queue.push(ev);
    }
  }

  _end() {
    if (this._ended) return;
    this._ended = true;
    if (this._link && this._serverSub) this._link.routes.delete(this._serverSub);
    for (const w of this._waiters.splice(0)) w({ value: undefined, done: true });
    this._resolveEnded();
  }

  /**
   * Stops the subscription: no event is delivered after this call, and an
   * iteration in progress ends. Resolves to true, or false if it had already
   * ended.
   * @returns {Promise<boolean>}
   */
  async unsubscribe() {
    if (this._ended) return false;
    this._client._subs.delete(this._id);
    const link = this._link;
    const sub = this._serverSub;
    this._end();
    if (link && link.alive && sub) {
      try {
        await link.call("unsubscribe", { sub }, this._client._timeout);
      } catch {
        /* the connection dropped: the hub removed the subscription with it */
      }
    }
    return true;
  }

  /**
   * The next event; `{done: true}` once the subscription has ended. Events
   * are buffered for `next()`/`for await` unless an `onEvent` callback was
   * given, in which case buffering starts with the first `next()`.
   * @returns {Promise<IteratorResult<MemhubEvent, undefined>>}
   */
  next() {
    this._buffer = true;
    if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
    if (this._ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this._waiters.push(resolve));
  }

  /**
   * Called when a `for await` loop exits early (`break`, `return`, throw):
   * unsubscribes.
   * @returns {Promise<IteratorResult<MemhubEvent, undefined>>}
   */
  async return() {
    await this.unsubscribe();
    this._queue.length = 0;
    return { value: undefined, done: true };
  }

  /** `for await (const ev of sub)`: every event until the subscription ends. */
  [Symbol.asyncIterator]() {
    this._buffer = true;
    return this;
  }
}

// ---------------------------------------------------------------- Lock

/**
 * A held lock: `{name, token, fence}`. It is held on a WebSocket of its own
 * (like the Rust client), so waiting for it never delays other calls, and
 * closing the client (or losing that socket) releases it.
 */
export class Lock {
  /** @hideconstructor */
  constructor(name, token, fence, link) {
    /** The lock's name. @type {string} */
    this.name = name;
    /** The secret that releases it. @type {string} */
    this.token = token;
    /** Strictly grows with every acquisition of any lock on the hub (fencing token). @type {number} */
    this.fence = fence;
    Object.defineProperty(this, "_link", { value: link, writable: true, enumerable: false });
  }

  /** False once the lock's own connection has closed (unlocked, lost, or client closed). */
  get connected() {
    return !!(this._link && this._link.alive);
  }
}

// ---------------------------------------------------------------- client

function sleep(ms, client) {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      client._sleepers.delete(done);
      resolve();
    }, ms);
    const done = () => {
      clearTimeout(t);
      resolve();
    };
    client._sleepers.add(done);
  });
}

function writeParams(key, value, opts, withValue) {
  const p = { key };
  if (withValue) p.value = value === undefined ? null : value;
  if (opts) {
    if (opts.ifRev !== undefined && opts.ifRev !== null) p.if_rev = opts.ifRev;
    if (opts.ttlMs !== undefined && opts.ttlMs !== null) p.ttl_ms = opts.ttlMs;
  }
  return p;
}

/**
 * A connection to a hub; create it with {@link connect}. Any number of calls
 * may be in flight at once over its one socket. See docs/javascript.md.
 */
export class MemhubClient {
  /** @hideconstructor */
  constructor(url, options = {}) {
    const WS = options.WebSocket || globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new MemhubError(
        ErrorCode.CONNECT_FAILED,
        'no WebSocket implementation: this runtime has no globalThis.WebSocket; pass one, e.g. `import WebSocket from "ws"; connect(url, { WebSocket })`',
      );
    }
    this._WS = WS;
    this._display = wsUrl(url);
    this._url = withToken(this._display, options.token);
    this._wsOptions = options.webSocketOptions;
    this._maxRetry = options.maxRetry ?? DEFAULTS.maxRetry;
    this._connectRetry = options.connectRetry ?? this._maxRetry;
    this._retryDelay = options.retryDelayMs ?? DEFAULTS.retryDelayMs;
    this._timeout = options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    this._onReconnect = options.onReconnect;
    this._ignoreVersion = !!options.ignoreVersion;
    this._link = null;
    this._subs = new Map();
    this._nextSub = 0;
    this._epoch = null;
    this._version = null;
    this._reconnecting = false;
    this._connecting = null;
    this._closed = false;
    this._waiters = new Set();
    this._sleepers = new Set();
    this._lockLinks = new Set();
  }

  /** The hub's URL (without the token). @type {string} */
  get url() {
    return this._display;
  }

  /** True while the client has a live connection to the hub. @type {boolean} */
  get connected() {
    return !!(this._link && this._link.alive);
  }

  /** True while the client is reconnecting after a lost connection. @type {boolean} */
  get reconnecting() {
    return this._reconnecting;
  }

  /** True once `close()` was called. @type {boolean} */
  get closed() {
    return this._closed;
  }

  /**
   * The hub's epoch as of the last (re)connect; it changes when the hub
   * restarts (revs start over). @type {string|null}
   */
  get epoch() {
    return this._epoch;
  }

  async _connectFirst() {
    let attempt = 0;
    for (;;) {
      try {
        await this._establish(false);
        return;
      } catch (e) {
        const fatal = e.code === ErrorCode.PROTOCOL || (e.data && e.data.auth);
        if (fatal || attempt >= this._connectRetry || this._closed) throw e;
        attempt += 1;
        await sleep(this._retryDelay, this);
        if (this._closed) throw new MemhubError(ErrorCode.CLOSED, "the client was closed");
      }
    }
  }

  /** Opens a socket, checks the version, installs it, and (when resuming) re-subscribes. */
  async _establish(resume) {
    const ws = await openSocket(this._WS, this._url, this._display, this._wsOptions, this._timeout);
    const link = new Link(ws, (l) => this._linkLost(l));
    if (this._closed) {
      link.close();
      throw new MemhubError(ErrorCode.CLOSED, "the client was closed");
    }
    let v;
    try {
      v = await link.call("version", {}, this._timeout);
    } catch (e) {
      link.close();
      throw e;
    }
    if (v && v.protocol !== PROTOCOL_VERSION && !this._ignoreVersion) {
      link.close();
      throw new MemhubError(
        ErrorCode.PROTOCOL,
        `the hub speaks protocol ${v.protocol} but this client speaks ${PROTOCOL_VERSION}; upgrade one of them or pass ignoreVersion: true`,
        { hub: v && v.protocol, client: PROTOCOL_VERSION },
      );
    }
    const sameEpoch = this._epoch !== null && this._epoch === v.epoch;
    this._epoch = v.epoch;
    this._version = v;
    this._link = link;
    if (resume) {
      const subs = [...this._subs.values()].filter((s) => s._established && !s._ended);
      try {
        await Promise.all(subs.map((s) => link.call("subscribe", s._params(), this._timeout, { state: s, mode: { initial: false, sameEpoch } })));
      } catch (e) {
        if (this._link === link) this._link = null;
        link.close();
        throw e;
      }
    }
    if (!link.alive) {
      throw new MemhubError(ErrorCode.DISCONNECTED, "the connection to the hub closed while reconnecting");
    }
  }

  _linkLost(link) {
    if (this._closed || this._link !== link) return;
    this._link = null;
    if (this._reconnecting) return;
    this._reconnecting = true;
    this._reconnectLoop();
  }

  async _reconnectLoop() {
    let last = null;
    for (let i = 0; i < this._maxRetry; i++) {
      await sleep(this._retryDelay, this);
      if (this._closed) return;
      try {
        await this._establish(true);
        this._reconnecting = false;
        for (const w of [...this._waiters]) w.resolve(this._link);
        this._waiters.clear();
        if (this._onReconnect) {
          try {
            this._onReconnect();
          } catch (e) {
            setTimeout(() => {
              throw e;
            }, 0);
          }
        }
        return;
      } catch (e) {
        last = e;
        if (this._closed) return;
        if (e.code === ErrorCode.PROTOCOL || (e.data && e.data.auth)) break;
      }
    }
    // Out of retries: end every subscription rather than leave it silent.
    // Later calls still try to connect once each.
    this._reconnecting = false;
    const subs = [...this._subs.values()];
    this._subs.clear();
    for (const s of subs) s._end();
    const err = new MemhubError(
      ErrorCode.CONNECT_FAILED,
      `the connection to the hub was lost and ${this._maxRetry} reconnect attempt(s) failed${last ? `: ${last.message}` : ""}`,
      last && last.data,
    );
    for (const w of [...this._waiters]) w.reject(err);
    this._waiters.clear();
  }

  /** The live link, waiting for a reconnect in progress, or one more attempt. */
  async _getLink() {
    if (this._closed) throw new MemhubError(ErrorCode.CLOSED, "the client was closed");
    if (this._link && this._link.alive) {
      if (this._link.ws.readyState === OPEN) return this._link;
      // Closing, but its close event has not run yet: reconnect now, so
      // this call waits for the new link instead of failing.
      this._linkLost(this._link);
    }
    if (this._reconnecting) {
      return new Promise((resolve, reject) => {
        const w = {
          resolve: (l) => {
            this._waiters.delete(w);
            resolve(l);
          },
          reject: (e) => {
            this._waiters.delete(w);
            reject(e);
          },
        };
        this._waiters.add(w);
      });
    }
    if (!this._connecting) {
      this._connecting = this._establish(true).finally(() => {
        this._connecting = null;
      });
    }
    await this._connecting;
    if (this._link && this._link.alive) return this._link;
    throw new MemhubError(ErrorCode.DISCONNECTED, "the connection to the hub was lost");
  }

  async _linkWithin(deadline, method) {
    if (this._link && this._link.alive && this._link.ws.readyState === OPEN && !this._closed) return this._link;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new MemhubError(ErrorCode.TIMEOUT, `${method}: no connection to the hub within ${this._timeout} ms (reconnecting)`)),
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      return await Promise.race([this._getLink(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async _call(method, params, extraMs = 0, sub) {
    const deadline = Date.now() + this._timeout + extraMs;
    const link = await this._linkWithin(deadline, method);
    return link.call(method, params, Math.max(1, deadline - Date.now()), sub);
  }

  /**
   * Sends any JSON-RPC request and resolves to its raw `result`.
   * @param {string} method
   * @param {object} [params]
   * @returns {Promise<*>}
   */
  call(method, params = {}) {
    return this._call(method, params);
  }

  /**
   * Stores `value` under `key` only if the key is absent. Resolves to the
   * hub's result `{value, rev, created}`: `value` is the value now held
   * (yours, or the one already there), `created` whether this call stored it.
   * @param {string} key
   * @param {*} value
   * @param {{ttlMs?: number}} [opts]
   */
  memoize(key, value, opts) {
    return this._call("memoize", writeParams(key, value, opts && { ttlMs: opts.ttlMs }, true));
  }

  /**
   * The key's value. Rejects with a MemhubError of code -32001 if the key
   * does not exist. Use {@link MemhubClient#getWithRev} for the rev too.
   * @param {string} key
   * @returns {Promise<*>}
   */
  async get(key) {
    return (await this._call("get", { key })).value;
  }

  /**
   * The key's value and rev: the hub's result `{value, rev}`; rejects with
   * -32001 if absent.
   * @param {string} key
   * @returns {Promise<{value: *, rev: number}>}
   */
  getWithRev(key) {
    return this._call("get", { key });
  }

  /**
   * The key's value, or `undefined` if it does not exist (`null` is a value
   * a key can hold, so absence is `undefined`).
   * @param {string} key
   * @returns {Promise<*>}
   */
  async tryGet(key) {
    try {
      return (await this._call("get", { key })).value;
    } catch (e) {
      if (e instanceof MemhubError && e.code === ErrorCode.NOT_FOUND) return undefined;
      throw e;
    }
  }

  /**
   * Inserts or replaces. `ifRev`: write only if the key's rev equals it
   * (0: only if absent), else -32002 with `data.rev`. `ttlMs`: expire that
   * long after this write (without it, the key no longer expires).
   * Resolves to `{rev, created}`.
   * @param {string} key
   * @param {*} value
   * @param {{ifRev?: number, ttlMs?: number}} [opts]
   */
  update(key, value, opts) {
    return this._call("update", writeParams(key, value, opts, true));
  }

  /**
   * Deletes the key; resolves to `{rev}` (the deletion's rev). -32001 if
   * absent, -32002 if `ifRev` does not match.
   * @param {string} key
   * @param {{ifRev?: number}} [opts]
   */
  delete(key, opts) {
    return this._call("delete", writeParams(key, undefined, opts && { ifRev: opts.ifRev }, false));
  }

  /**
   * True if the key exists (even when it holds `null`).
   * @param {string} key
   * @returns {Promise<boolean>}
   */
  isMemoized(key) {
    return this._call("is_memoized", { key });
  }

  /**
   * The hub's `{name, version, protocol, epoch}`.
   */
  version() {
    return this._call("version", {});
  }

  /**
   * The hub's counters: `{keys, connections, subscriptions, rev, uptime_ms,
   * locks_held, lock_waiters, connection_subscriptions, epoch, version, …}`.
   */
  stats() {
    return this._call("stats", {});
  }

  /**
   * One page of keys, sorted by key bytes: the hub's result
   * `{keys: [{key, rev, bytes, expires_at_ms?}], next}`. Pass `next` as
   * `after` for the next page (`next` is null on the last page). `limit`
   * defaults to 100 and is clamped to 1000.
   * @param {{prefix?: string, after?: string|null, limit?: number}} [opts]
   */
  keys(opts = {}) {
    const p = {};
    if (opts.prefix !== undefined && opts.prefix !== null) p.prefix = opts.prefix;
    if (opts.after !== undefined && opts.after !== null) p.after = opts.after;
    if (opts.limit !== undefined && opts.limit !== null) p.limit = opts.limit;
    return this._call("keys", p);
  }

  /**
   * Every key starting with `prefix`, page by page (1000 a page), as an
   * async iterator of `{key, rev, bytes, expires_at_ms?}`.
   * @param {string} [prefix]
   */
  async *iterKeys(prefix = "") {
    let after = null;
    for (;;) {
      const page = await this.keys({ prefix, after, limit: 1000 });
      for (const k of page.keys) yield k;
      if (page.next === null || page.next === undefined) return;
      after = page.next;
    }
  }

  /**
   * The key's listing row `{key, rev, bytes, expires_at_ms?}` (size of its
   * compact JSON and its expiry deadline in Unix ms), or `undefined` if it
   * does not exist.
   * @param {string} key
   */
  async keyInfo(key) {
    const page = await this.keys({ prefix: key, limit: 1 });
    const row = page.keys[0];
    return row && row.key === key ? row : undefined;
  }

  /**
   * Applies an RFC 6902 JSON Patch atomically (all ops or none); resolves
   * to `{value, rev}`. -32001 if absent, -32005 (`data.op_index`) if an op
   * fails, -32602 if `ops` is malformed.
   * @param {string} key
   * @param {Array<object>} ops
   * @param {{ifRev?: number, ttlMs?: number}} [opts]
   */
  patch(key, ops, opts) {
    const p = writeParams(key, undefined, opts, false);
    p.ops = ops;
    return this._call("patch", p);
  }

  /**
   * Applies an RFC 7396 merge patch atomically (an absent key merges onto
   * `null`); resolves to `{value, rev, created}`.
   * @param {string} key
   * @param {*} patch
   * @param {{ifRev?: number, ttlMs?: number}} [opts]
   */
  merge(key, patch, opts) {
    return this._call("merge", writeParams(key, patch, opts, true));
  }

  /**
   * Adds `by` (default 1) to the number held (an absent key counts as 0);
   * resolves to `{value, rev, created}`. -32006 if the value is not a number
   * or on i64 overflow.
   * @param {string} key
   * @param {number} [by]
   * @param {{ifRev?: number, ttlMs?: number}} [opts]
   */
  incr(key, by = 1, opts) {
    if (by !== null && typeof by === "object") {
      opts = by;
      by = opts.by ?? 1;
    }
    const p = writeParams(key, undefined, opts, false);
    p.by = by;
    return this._call("incr", p);
  }

  /**
   * Acquires the named lock and resolves to a {@link Lock} `{name, token,
   * fence}`. `waitMs` (default 0: try once) is how long to queue for it,
   * `ttlMs` its lease. Rejects with -32003 if not acquired in time. The lock
   * is held on a connection of its own: waiting never delays other calls,
   * and the lock is released if that connection closes (e.g. `close()`).
   * @param {string} name
   * @param {{ttlMs?: number, waitMs?: number}} [opts]
   * @returns {Promise<Lock>}
   */
  async lock(name, opts = {}) {
    if (this._closed) throw new MemhubError(ErrorCode.CLOSED, "the client was closed");
    const waitMs = opts.waitMs ?? 0;
    const params = { name, wait_ms: waitMs };
    if (opts.ttlMs !== undefined && opts.ttlMs !== null) params.ttl_ms = opts.ttlMs;
    const ws = await openSocket(this._WS, this._url, this._display, this._wsOptions, this._timeout);
    const link = new Link(ws, () => this._lockLinks.delete(link));
    this._lockLinks.add(link);
    if (this._closed) {
      link.close();
      throw new MemhubError(ErrorCode.CLOSED, "the client was closed");
    }
    try {
      const r = await link.call("lock", params, this._timeout + waitMs);
      return new Lock(name, r.token, r.fence, link);
    } catch (e) {
      this._lockLinks.delete(link);
      link.close();
      throw e;
    }
  }

  /**
   * Releases a lock: pass the {@link Lock} from `lock()`, or its name and
   * token. Resolves to true; rejects with -32004 if that token does not hold
   * the lock (already unlocked, lease ran out, or its connection closed).
   * @param {Lock|string} lock
   * @param {string} [token]
   * @returns {Promise<true>}
   */
  async unlock(lock, token) {
    let name = lock;
    let link = null;
    if (lock !== null && typeof lock === "object") {
      name = lock.name;
      token = lock.token;
      link = lock._link || null;
    }
    try {
      if (link && link.alive) return await link.call("unlock", { name, token }, this._timeout);
      return await this._call("unlock", { name, token });
    } finally {
      if (link) {
        this._lockLinks.delete(link);
        link.close();
      }
    }
  }

  async _subscribe(watch, onEvent) {
    const sub = new Subscription(this, watch, onEvent);
    sub._id = ++this._nextSub;
    this._subs.set(sub._id, sub);
    try {
      await this._call("subscribe", sub._params(), 0, { state: sub, mode: { initial: true } });
    } catch (e) {
      this._subs.delete(sub._id);
      sub._end();
      throw e;
    }
    if (sub._ended) throw new MemhubError(ErrorCode.CLOSED, "the subscription ended before it started");
    return sub;
  }

  /**
   * Watches one key. Resolves to a {@link Subscription} whose `snapshot` is
   * the key's state now (`{exists, value?, rev?}`, taken atomically with
   * the subscription); then every change arrives, in rev order, as an event
   * `{event: "update"|"delete"|"expire"|"lagged", key, value?, rev?,
   * synthetic?}` passed to `onEvent` (if given) and yielded by
   * `for await (const ev of sub)`.
   * @param {string} key
   * @param {(ev: MemhubEvent) => void} [onEvent]
   * @returns {Promise<Subscription>}
   */
  subscribe(key, onEvent) {
    return this._subscribe({ key }, onEvent);
  }

  /**
   * Watches every key starting with `prefix` (`""`: every key). Its
   * `snapshot` is null: list the current keys with `keys({prefix})` after
   * subscribing. A `lagged` event (no key) means events were missed: re-list.
   * @param {string} prefix
   * @param {(ev: MemhubEvent) => void} [onEvent]
   * @returns {Promise<Subscription>}
   */
  subscribePrefix(prefix, onEvent) {
    return this._subscribe({ prefix }, onEvent);
  }

  /**
   * Closes the connection (and the connections of held locks, which
   * releases them). Calls in flight and later calls reject with code
   * "closed"; every subscription ends. Resolves once the sockets closed
   * (at most about a second).
   * @returns {Promise<void>}
   */
  async close() {
    if (this._closed) return;
    this._closed = true;
    for (const s of [...this._sleepers]) s();
    this._sleepers.clear();
    const err = new MemhubError(ErrorCode.CLOSED, "the client was closed");
    for (const w of [...this._waiters]) w.reject(err);
    this._waiters.clear();
    const subs = [...this._subs.values()];
    this._subs.clear();
    for (const s of subs) s._end();
    const links = [...this._lockLinks];
    this._lockLinks.clear();
    if (this._link) links.push(this._link);
    this._link = null;
    const closing = Promise.all(links.map((l) => l.close()));
    let timer;
    const cap = new Promise((resolve) => {
      timer = setTimeout(resolve, 1000);
      if (timer && typeof timer.unref === "function") timer.unref();
    });
    await Promise.race([closing, cap]);
    clearTimeout(timer);
  }
}

/**
 * Connects to a hub and resolves to a {@link MemhubClient} once the socket
 * is open and the hub's protocol version is checked. It tries
 * `1 + connectRetry` times (default: `maxRetry`), `retryDelayMs` apart, except that a refusal it can
 * recognize as an authentication/origin failure (HTTP 401/403, detectable
 * with the `ws` package, not in browsers) fails at once.
 *
 * @param {string} [url] `ws://HOST:PORT/ws` (http(s) URLs and a missing
 *   `/ws` path are accepted; in a browser, defaults to this page's hub).
 * @param {ConnectOptions} [options]
 * @returns {Promise<MemhubClient>}
 */
export async function connect(url, options = {}) {
  const client = new MemhubClient(url, options);
  await client._connectFirst();
  return client;
}

/**
 * @typedef {object} ConnectOptions
 * @property {string} [token] Access token, sent as the `?token=` query parameter.
 * @property {*} [WebSocket] A WebSocket class (e.g. the `ws` package's) when `globalThis.WebSocket` is missing.
 * @property {*} [webSocketOptions] Third argument for the WebSocket constructor (`ws` package options, e.g. headers); not for browsers.
 * @property {number} [maxRetry] Connection attempts after a lost connection (and retries of the first connect); default 4; `Infinity` never gives up.
 * @property {number} [connectRetry] Retries of the first connect, if it should differ from `maxRetry` (e.g. 0: fail fast, then reconnect forever).
 * @property {number} [retryDelayMs] Pause before each attempt; default 3000.
 * @property {number} [requestTimeoutMs] How long a call waits for its answer (a lock: this plus `waitMs`); default 30000.
 * @property {() => void} [onReconnect] Called after each successful reconnect, once subscriptions are resumed.
 * @property {boolean} [ignoreVersion] Connect even if the hub speaks another protocol version.
 */

/**
 * @typedef {object} MemhubEvent
 * @property {"update"|"delete"|"expire"|"lagged"} event What happened.
 * @property {string} [key] The key that changed (absent on a prefix subscription's `lagged`).
 * @property {*} [value] The new value, on `update` (present even when it is `null`).
 * @property {number} [rev] The change's rev (absent on `lagged` and on a synthesized `delete`).
 * @property {boolean} [synthetic] True on the event a reconnect synthesizes for what changed while away.
 */

export default connect;
