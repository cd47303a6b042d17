// Helpers for the dashboard's browser tests: a real hub on a free port,
// Debian's Chromium through playwright-core, the JS client for Node, polling.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const screenshotDir = resolve(repoRoot, "target/dashboard");

/**
 * Start `memhub serve` on 127.0.0.1 and a free port (or `port`). Resolves
 * with { port, httpUrl, wsUrl, stop() } once the hub logs its listening line.
 */
export function startHub(extraArgs = [], { port = 0 } = {}) {
  const bin = process.env.MEMHUB_BIN || resolve(repoRoot, "target/debug/memhub");
  const child = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", String(port), ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" },
  });
  let stderr = "";
  const exited = new Promise((r) => child.once("exit", r));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`hub did not start within 15 s; stderr:\n${stderr}`));
    }, 15_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${bin}: ${err.message} (build it with cargo build, or set MEMHUB_BIN)`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited (${code}) before listening; stderr:\n${stderr}`));
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      if (stderr.length < 100_000) stderr += chunk;
      const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws/.exec(stderr);
      if (m && timer) {
        clearTimeout(timer);
        const bound = Number(m[1]);
        resolvePromise({
          port: bound,
          httpUrl: `http://127.0.0.1:${bound}/`,
          wsUrl: `ws://127.0.0.1:${bound}/ws`,
          stderr: () => stderr,
          async stop() {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
            const t = setTimeout(() => child.kill("SIGKILL"), 5000);
            await exited;
            clearTimeout(t);
          },
        });
      }
    });
  });
}

/** The JS client (web/memhub.js) for Node, over `ws`. */
export async function nodeClient(url, options = {}) {
  const { connect } = await import(pathToFileURL(resolve(repoRoot, "web/memhub.js")).href);
  return connect(url, { WebSocket, ...options });
}

/**
 * Write `count` keys `${prefix}${i padded}` fast: raw JSON-RPC batches of
 * 1000 updates, a few batches in flight at a time, on one connection.
 */
export async function bulkWrite(wsUrl, count, prefix = "bulk/", options = {}) {
  const ws = new WebSocket(wsUrl, options);
  await new Promise((r, j) => {
    ws.once("open", r);
    ws.once("error", j);
  });
  const width = String(count - 1).length;
  const batch = 1000;
  let nextId = 1;
  const waiting = new Map();
  ws.on("message", (data) => {
    const replies = JSON.parse(data.toString());
    for (const reply of Array.isArray(replies) ? replies : [replies]) {
      if (reply.error) throw new Error(`bulk write failed: ${JSON.stringify(reply.error)}`);
    }
    const first = Array.isArray(replies) ? replies[0].id : replies.id;
    waiting.get(first)?.();
    waiting.delete(first);
  });
  const send = (from, to) => new Promise((r) => {
    const reqs = [];
    for (let i = from; i < to; i++) {
      reqs.push({ jsonrpc: "2.0", id: nextId++, method: "update", params: { key: `${prefix}${String(i).padStart(width, "0")}`, value: { n: i } } });
    }
    waiting.set(reqs[0].id, r);
    ws.send(JSON.stringify(reqs));
  });
  const inFlight = [];
  for (let i = 0; i < count; i += batch) {
    inFlight.push(send(i, Math.min(count, i + batch)));
    if (inFlight.length >= 8) await inFlight.shift();
  }
  await Promise.all(inFlight);
  ws.close();
}

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/**
 * A new page in its own context that records console errors and page errors
 * in `page.problems` (assert it stays empty). `allow` lists regexps of
 * console messages a test expects (the browser's own log of a refused
 * WebSocket upgrade, say).
 */
export async function openPage(browser, { viewport = { width: 1280, height: 800 }, colorScheme = "light", allow = [] } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (msg) => {
    if (msg.type() !== "error" && msg.type() !== "warning") return;
    const text = msg.text();
    if (allow.some((re) => re.test(text))) return;
    page.problems.push(`console.${msg.type()}: ${text}`);
  });
  page.on("pageerror", (err) => page.problems.push(`pageerror: ${err.stack || err.message}`));
  page.setDefaultTimeout(10_000);
  return page;
}

/** Poll `fn` until it returns a truthy value (returned) or the deadline passes. */
export async function waitFor(fn, { timeout = 10_000, interval = 25, message = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export async function screenshot(page, name, options = {}) {
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: resolve(screenshotDir, name), ...options });
}
