// The real hub binary for the JS suites (client/ and browser/): start it on
// 127.0.0.1, stop it, kill it like a crash, restart it on the same port.
//
// The binary is $MEMHUB_BIN, else <repo>/target/debug/memhub (`cargo build`).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");
export const BIN = process.env.MEMHUB_BIN || path.join(repoRoot, "target", "debug", "memhub");

/** The test's environment without MEMHUB_* settings, which would change the hub. */
function hubEnv() {
  const env = { RUST_LOG: "info", NO_COLOR: "1" };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("MEMHUB_")) env[k] = v;
  }
  return env;
}

/**
 * Spawns `memhub serve` once; resolves with {proc, port, log()} when it logs
 * its address, rejects if it exits first. log() is everything it has written
 * to stderr so far (the first 100 kB).
 */
function spawnOnce(args, port) {
  if (!existsSync(BIN)) {
    throw new Error(`hub binary ${BIN} not found: run \`cargo build\` in ${repoRoot} or set MEMHUB_BIN`);
  }
  const proc = spawn(BIN, ["serve", "--host", "127.0.0.1", "--port", String(port), ...args], {
    env: hubEnv(),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (chunk) => {
    if (log.length < 100_000) log += chunk;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`hub did not start within 10 s:\n${log}`));
    }, 10000);
    const onData = () => {
      const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws/.exec(log);
      if (m) {
        clearTimeout(timer);
        proc.stderr.off("data", onData);
        proc.off("exit", onExit);
        resolve({ proc, port: Number(m[1]), log: () => log });
      }
    };
    const onExit = (code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`hub exited (${code}) before listening:\n${log}`), { log }));
    };
    proc.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${BIN}: ${err.message}`));
    });
    proc.stderr.on("data", onData);
    proc.once("exit", onExit);
  });
}

function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once("exit", resolve));
}

/**
 * Starts a hub on a free port (or `port`). Returns {port, url, httpUrl,
 * stderr(), stop(), kill(), restart()}: `url` is the ws:// URL, `httpUrl`
 * has no trailing slash; restart() brings a fresh (empty) hub up on the same
 * port. stop() is SIGTERM (a graceful shutdown, SIGKILL after 5 s) when
 * `graceful`, else the same as kill().
 */
export async function startHub(args = [], { port: wanted = 0, graceful = false } = {}) {
  let { proc, port, log } = await spawnOnce(args, wanted);
  const hub = {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    get proc() {
      return proc;
    },
    /** What the hub has logged so far. */
    stderr() {
      return log();
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
      if (!graceful || !proc) return hub.kill();
      const p = proc;
      proc = null;
      p.kill("SIGTERM");
      const force = setTimeout(() => p.kill("SIGKILL"), 5000);
      await exited(p);
      clearTimeout(force);
    },
    /** Starts the hub again on the same port (retrying while the port is busy). */
    async restart() {
      await hub.kill();
      const deadline = Date.now() + 10000;
      for (;;) {
        try {
          ({ proc, log } = await spawnOnce(args, port));
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
