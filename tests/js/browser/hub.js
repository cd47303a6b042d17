// Helpers for the dashboard's browser tests: a real hub on a free port,
// Debian's Chromium through playwright-core, the JS client for Node, polling.
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { startHub as startBinary } from "../lib/hub.js";
import WebSocket from "ws";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const screenshotDir = resolve(repoRoot, "target/dashboard");

/**
 * Start `memhub serve` on 127.0.0.1 and a free port (or `port`). Resolves
 * with { port, httpUrl (with a trailing slash), wsUrl, stderr(), stop() }
 * once the hub logs its listening line; stop() is a graceful SIGTERM.
 */
export async function startHub(extraArgs = [], { port = 0 } = {}) {
  const hub = await startBinary(extraArgs, { port, graceful: true });
  return Object.assign(hub, { httpUrl: `${hub.httpUrl}/`, wsUrl: hub.url });
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
