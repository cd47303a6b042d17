// Types for memhub.js, the JavaScript client of memhub (see docs/javascript.md).

/** Any JSON value a key can hold. */
export type Json = null | boolean | number | string | Json[] | { [member: string]: Json };

/** The wire protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

/** Error codes: numbers come from the hub, strings from the client. */
export declare const ErrorCode: {
  readonly PARSE_ERROR: -32700;
  readonly INVALID_REQUEST: -32600;
  readonly METHOD_NOT_FOUND: -32601;
  readonly INVALID_PARAMS: -32602;
  readonly INTERNAL_ERROR: -32603;
  readonly NOT_FOUND: -32001;
  readonly REV_MISMATCH: -32002;
  readonly LOCK_TIMEOUT: -32003;
  readonly LOCK_NOT_HELD: -32004;
  readonly PATCH_FAILED: -32005;
  readonly NOT_A_NUMBER: -32006;
  readonly FORBIDDEN: -32010;
  readonly LIMIT_EXCEEDED: -32011;
  readonly CONNECT_FAILED: "connect failed";
  readonly DISCONNECTED: "disconnected";
  readonly CLOSED: "closed";
  readonly TIMEOUT: "timeout";
  readonly PROTOCOL: "protocol";
};

/** A client-side failure code. */
export type ClientErrorCode = "connect failed" | "disconnected" | "closed" | "timeout" | "protocol";

/**
 * Every failure of the client. `code` is the hub's JSON-RPC error code
 * (-32001 not found, -32002 rev mismatch, -32010 forbidden, …) or a
 * client-side code ("connect failed", "disconnected", "closed", "timeout",
 * "protocol"); `data` is the hub's error data (e.g. `{key}`, `{rev}`,
 * `{op_index}`) or, for "connect failed", `{status, auth}` when the HTTP
 * status of a refused upgrade is known.
 */
export declare class MemhubError extends Error {
  constructor(code: number | string, message: string, data?: unknown);
  readonly name: "MemhubError";
  code: number | ClientErrorCode;
  data?: any;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** Access token, sent URL-encoded as the `?token=` query parameter. */
  token?: string;
  /** A WebSocket class (e.g. `import WebSocket from "ws"`) when `globalThis.WebSocket` is missing. */
  WebSocket?: unknown;
  /** Third argument to the WebSocket constructor (options of the `ws` package); not for browsers. */
  webSocketOptions?: unknown;
  /** Reconnect attempts after a lost connection, and retries of the first connect (default 4; `Infinity` allowed). */
  maxRetry?: number;
  /** Retries of the first connect, if they should differ from `maxRetry` (e.g. 0: fail fast, then reconnect forever). Default: `maxRetry`. */
  connectRetry?: number;
  /** Pause before each attempt, in ms (default 3000). */
  retryDelayMs?: number;
  /** How long a call waits for its answer, including any wait for a reconnect (default 30000; a lock waits this plus `waitMs`). */
  requestTimeoutMs?: number;
  /** Called after each successful reconnect, once subscriptions are resumed. */
  onReconnect?: () => void;
  /** Connect even if the hub speaks another protocol version. */
  ignoreVersion?: boolean;
}

/** Condition and expiry of a write. */
export interface WriteOptions {
  /** Apply only if the key's current rev equals this; 0 means "only if absent". Mismatch: -32002 with `data.rev`. */
  ifRev?: number;
  /** Expire the key this many ms after the write (an integer ≥ 1). */
  ttlMs?: number;
}

export interface MemoizeResult<T = Json> {
  /** The value now held: yours, or the one already there. */
  value: T;
  rev: number;
  /** True if this call stored the value. */
  created: boolean;
}
export interface GetResult<T = Json> {
  value: T;
  rev: number;
}
export interface UpdateResult {
  rev: number;
  created: boolean;
}
export interface DeleteResult {
  /** The deletion's rev. */
  rev: number;
}
export interface PatchResult<T = Json> {
  value: T;
  rev: number;
}
export interface MergeResult<T = Json> {
  value: T;
  rev: number;
  created: boolean;
}
export interface IncrResult {
  value: number;
  rev: number;
  created: boolean;
}
export interface VersionInfo {
  name: "memhub" | string;
  version: string;
  protocol: number;
  /** Changes whenever the hub's revs restart (a restarted in-memory hub). */
  epoch: string;
  /** What this connection's token may do: "read" for a read token, else "write". */
  role: "write" | "read";
}
export interface Stats {
  keys: number;
  connections: number;
  subscriptions: number;
  rev: number;
  uptime_ms: number;
  locks_held?: number;
  lock_waiters?: number;
  connection_subscriptions?: number;
  epoch?: string;
  version?: string;
  [other: string]: unknown;
}
/** One row of a `keys` listing. */
export interface KeyInfo {
  key: string;
  rev: number;
  /** Size of the value's compact JSON, in bytes. */
  bytes: number;
  /** Expiry deadline in Unix ms (hub clock); absent when the key does not expire. */
  expires_at_ms?: number;
}
export interface KeysPage {
  keys: KeyInfo[];
  /** The last key of this page when more remain (pass it as `after`), else null. */
  next: string | null;
}
export interface KeysOptions {
  prefix?: string;
  after?: string | null;
  /** Page size: default 100, clamped to 1000; 0 answers -32602. */
  limit?: number;
}
/** A key's state: `{exists: true, value, rev}` or `{exists: false}`. */
export interface Snapshot<T = Json> {
  exists: boolean;
  value?: T;
  rev?: number;
}
/** An (RFC 6902) JSON Patch operation. */
export type PatchOp =
  | { op: "add" | "replace" | "test"; path: string; value: Json }
  | { op: "remove"; path: string }
  | { op: "move" | "copy"; from: string; path: string };

/** One change notification of a subscription. */
export interface MemhubEvent<T = Json> {
  /** `update`: the key is present after the change; `delete`/`expire`: it is gone; `lagged`: events were missed. */
  event: "update" | "delete" | "expire" | "lagged";
  /** The key that changed (absent on a prefix subscription's `lagged`). */
  key?: string;
  /** The new value, on `update` (present even when it is `null`). */
  value?: T;
  /** The change's rev (absent on `lagged` and on a synthesized `delete`). */
  rev?: number;
  /** True on the event a reconnect synthesizes for what changed while the link was down. */
  synthetic?: boolean;
}

/** A live subscription; iterate it with `for await`, or pass `onEvent`. */
export declare class Subscription<T = Json> implements AsyncIterableIterator<MemhubEvent<T>> {
  private constructor();
  /** What it watches. */
  readonly watch: { key: string } | { prefix: string };
  /** The watched key (key subscriptions). */
  readonly key: string | undefined;
  /** The watched prefix (prefix subscriptions). */
  readonly prefix: string | undefined;
  /** The key's state when the subscription started (atomic with it); null for a prefix subscription. */
  readonly snapshot: Snapshot<T> | null;
  /** The last state reported for the key (snapshot, then events applied); null for a prefix subscription. */
  readonly state: Snapshot<T> | null;
  /** True once the subscription has ended. */
  readonly closed: boolean;
  /** Resolves when the subscription ends (unsubscribe, close, or reconnecting gave up). */
  readonly ended: Promise<void>;
  /** Stops it; resolves to true, or false if it had already ended. */
  unsubscribe(): Promise<boolean>;
  /** The next event; `done` once the subscription has ended. */
  next(): Promise<IteratorResult<MemhubEvent<T>, undefined>>;
  /** Ends an iteration early: unsubscribes. */
  return(): Promise<IteratorResult<MemhubEvent<T>, undefined>>;
  [Symbol.asyncIterator](): this;
}

/** A held lock. Pass it to `unlock`. */
export declare class Lock {
  private constructor();
  readonly name: string;
  /** The secret that releases it. */
  readonly token: string;
  /** Fencing token: strictly grows with every acquisition of any lock. */
  readonly fence: number;
  /** False once the lock's own connection has closed. */
  readonly connected: boolean;
}

/** A connection to a hub. */
export declare class MemhubClient {
  private constructor();
  /** The hub's URL, without the token. */
  readonly url: string;
  /** True while there is a live connection. */
  readonly connected: boolean;
  /** True while reconnecting after a lost connection. */
  readonly reconnecting: boolean;
  /** True once `close()` was called. */
  readonly closed: boolean;
  /** The hub's epoch as of the last (re)connect. */
  readonly epoch: string | null;

  /** Any JSON-RPC request; resolves to its raw result. */
  call<R = unknown>(method: string, params?: Record<string, unknown>): Promise<R>;
  /** Stores `value` if `key` is absent; resolves to the value now held, its rev, and whether this call created it. */
  memoize<T = Json>(key: string, value: T, opts?: { ttlMs?: number }): Promise<MemoizeResult<T>>;
  /** The key's value; rejects with code -32001 if absent. */
  get<T = Json>(key: string): Promise<T>;
  /** The key's value and rev; rejects with -32001 if absent. */
  getWithRev<T = Json>(key: string): Promise<GetResult<T>>;
  /** The key's value, or `undefined` if absent. */
  tryGet<T = Json>(key: string): Promise<T | undefined>;
  /** Inserts or replaces (and replaces the expiry: none unless `ttlMs`). */
  update<T = Json>(key: string, value: T, opts?: WriteOptions): Promise<UpdateResult>;
  /** Deletes; -32001 if absent. */
  delete(key: string, opts?: { ifRev?: number }): Promise<DeleteResult>;
  /** True if the key exists (even holding `null`). */
  isMemoized(key: string): Promise<boolean>;
  version(): Promise<VersionInfo>;
  stats(): Promise<Stats>;
  /** One page of the listing. */
  keys(opts?: KeysOptions): Promise<KeysPage>;
  /** Every key starting with `prefix`, across pages. */
  iterKeys(prefix?: string): AsyncGenerator<KeyInfo, void, undefined>;
  /** The key's listing row (rev, bytes, expires_at_ms?), or undefined if absent. */
  keyInfo(key: string): Promise<KeyInfo | undefined>;
  /** RFC 6902 JSON Patch, all ops or none. */
  patch<T = Json>(key: string, ops: PatchOp[], opts?: WriteOptions): Promise<PatchResult<T>>;
  /** RFC 7396 merge patch (an absent key merges onto null). */
  merge<T = Json>(key: string, patch: Json, opts?: WriteOptions): Promise<MergeResult<T>>;
  /** Adds `by` (default 1); an absent key starts at 0. */
  incr(key: string, by?: number, opts?: WriteOptions): Promise<IncrResult>;
  incr(key: string, opts: WriteOptions & { by?: number }): Promise<IncrResult>;
  /** Acquires a lock on a connection of its own; -32003 if not acquired within `waitMs` (default 0: try once). */
  lock(name: string, opts?: { ttlMs?: number; waitMs?: number }): Promise<Lock>;
  /** Releases a lock; -32004 if that token does not hold it. */
  unlock(lock: Lock): Promise<true>;
  unlock(name: string, token: string): Promise<true>;
  /** Watches one key: snapshot now, then every change in rev order. */
  subscribe<T = Json>(key: string, onEvent?: (ev: MemhubEvent<T>) => void): Promise<Subscription<T>>;
  /** Watches every key starting with `prefix`. */
  subscribePrefix<T = Json>(prefix: string, onEvent?: (ev: MemhubEvent<T>) => void): Promise<Subscription<T>>;
  /** Closes the connection(s); calls reject with code "closed" and subscriptions end. */
  close(): Promise<void>;
}

/** Connects to a hub (in a browser, the URL defaults to the page's own hub). */
export declare function connect(url?: string, options?: ConnectOptions): Promise<MemhubClient>;
export default connect;
