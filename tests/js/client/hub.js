// Test helpers: the real hub binary (../lib/hub.js), a TCP proxy that can
// cut and block connections, and small await-with-deadline utilities.

import net from "node:net";
import WebSocket from "ws";

import { connect as clientConnect } from "../../../web/memhub.js";

export { BIN, repoRoot, startHub } from "../lib/hub.js";

export { WebSocket };

/** connect() with the ws package and test-friendly retry settings. */
export function connect(url, options = {}) {
  return clientConnect(url, { WebSocket, retryDelayMs: 50, maxRetry: 3, requestTimeoutMs: 5000, ...options });
}

/**
 * A TCP proxy to 127.0.0.1:targetPort. `dropAll()` cuts every connection;
 * while `blocked`, new connections are closed at once (so a client's
 * reconnect attempts fail until `unblock()`).
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  const state = { blocked: false, target: targetPort, accepted: 0, refused: 0 };
  const server = net.createServer((c) => {
    if (state.blocked) {
      state.refused += 1;
      c.destroy();
      return;
    }
    state.accepted += 1;
    const u = net.connect(state.target, "127.0.0.1");
    const pair = { c, u };
    pairs.add(pair);
    const end = () => {
      c.destroy();
      u.destroy();
      pairs.delete(pair);
    };
    c.on("error", end);
    u.on("error", end);
    c.on("close", end);
    u.on("close", end);
    c.pipe(u);
    u.pipe(c);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    state,
    block() {
      state.blocked = true;
    },
    unblock() {
      state.blocked = false;
    },
    setTarget(p) {
      state.target = p;
    },
    dropAll() {
      for (const { c, u } of [...pairs]) {
        c.destroy();
        u.destroy();
      }
      pairs.clear();
    },
    async close() {
      this.dropAll();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Rejects after `ms` with a message (a deadline, never a synchronization). */
export function within(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** The subscription's next event, failing after `ms`. */
export async function nextEvent(sub, ms = 3000) {
  const r = await within(sub.next(), ms, "an event");
  if (r.done) throw new Error("the subscription ended instead of delivering an event");
  return r.value;
}

/** Polls `cond` until it is truthy (or fails after `ms`). */
export async function until(cond, ms = 5000, what = "a condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A callback that collects events and lets a test await the n-th. */
export function collector() {
  const events = [];
  const waiters = [];
  const fn = (ev) => {
    events.push(ev);
    for (const w of [...waiters]) {
      if (events.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(events.slice());
      }
    }
  };
  fn.events = events;
  fn.waitFor = (n, ms = 3000) =>
    within(
      events.length >= n ? Promise.resolve(events.slice()) : new Promise((resolve) => waiters.push({ n, resolve })),
      ms,
      `${n} events (have ${events.length})`,
    );
  return fn;
}
