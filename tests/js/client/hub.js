// Test helpers: run the real hub binary, a TCP proxy that can cut and block
// connections, and small await-with-deadline utilities.
//
// The binary is $MEMHUB_BIN, else <repo>/target/debug/memhub (`cargo build`).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

import { connect as clientConnect } from "../../../web/memhub.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");
export const BIN = process.env.MEMHUB_BIN || path.join(repoRoot, "target", "debug", "memhub");

export { WebSocket };

/** connect() with the ws package and test-friendly retry settings. */
export function connect(url, options = {}) {
  return clientConnect(url, { WebSocket, retryDelayMs: 50, maxRetry: 3, requestTimeoutMs: 5000, ...options });
}

function hubEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("MEMHUB_")) env[k] = v;
  }
  return env;
}

/** Spawns `memhub serve` once; resolves when it logs its address, rejects if it exits first. */
function spawnOnce(args, port) {
  if (!existsSync(BIN)) {
    throw new Error(`hub binary ${BIN} not found: run \`cargo build\` in ${repoRoot} or set MEMHUB_BIN`);
  }
  const proc = spawn(BIN, ["serve", "--host", "127.0.0.1", "--port", String(port), ...args], {
    env: hubEnv(),
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`hub did not start within 10 s:\n${log}`));
    }, 10000);
    const onData = (chunk) => {
      log += chunk.toString();
      const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws/.exec(log);
      if (m) {
        clearTimeout(timer);
        proc.stderr.off("data", onData);
        proc.stderr.resume(); // keep draining
        proc.off("exit", onExit);
        resolve({ proc, port: Number(m[1]) });
      }
    };
    const onExit = (code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`hub exited (${code}) before listening:\n${log}`), { log }));
    };
    proc.stderr.on("data", onData);
    proc.once("exit", onExit);
  });
}

function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once("exit", resolve));
}

/**
 * Starts a hub on a free port. Returns {port, url, httpUrl, stop(), kill(),
 * restart()}; restart() brings a fresh (empty) hub up on the same port.
 */
export async function startHub(args = []) {
  let { proc, port } = await spawnOnce(args, 0);
  const hub = {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    get proc() {
      return proc;
    },
    /** Kills the hub at once (like a crash) and waits for it to exit. */
    async kill() {
      if (proc) {
        const p = proc;
        proc = null;
        p.kill("SIGKILL");
        await exited(p);
      }
    },
    async stop() {
      await hub.kill();
    },
    /** Starts the hub again on the same port (retrying while the port is busy). */
    async restart() {
      await hub.kill();
      const deadline = Date.now() + 10000;
      for (;;) {
        try {
          ({ proc } = await spawnOnce(args, port));
          return;
        } catch (e) {
          if (Date.now() > deadline || !/in use|AddrInUse|address/i.test(e.log || "")) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
  };
  return hub;
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
