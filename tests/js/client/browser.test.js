// memhub.js in a real browser (Chromium through playwright-core), imported
// from the hub at /memhub.js by a page of the hub's own origin. Skipped when
// no Chromium is installed ($CHROMIUM_BIN, default /usr/bin/chromium).

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";

import { connect, startHub } from "./hub.js";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
let browser;
let skip = false;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    skip = `no Chromium at ${CHROMIUM}`;
    return;
  }
  const { launchBrowser } = await import("../browser/hub.js");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** A page on the hub's origin (its /healthz), with `connect` imported from /memhub.js as window.memhub. */
async function hubPage(hub) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${hub.httpUrl}/healthz`);
  await page.evaluate(async () => {
    window.memhub = await import("/memhub.js");
  });
  page.errors = errors;
  return page;
}

test("in a browser: connect() to the page's hub, calls, subscribe and for-await", async (t) => {
  if (skip) return t.skip(skip);
  const hub = await startHub();
  t.after(() => hub.stop());
  const page = await hubPage(hub);
  t.after(() => page.context().close());
  const out = await page.evaluate(async () => {
    const { connect, MemhubError } = window.memhub;
    const hub = await connect(); // no URL: this page's hub
    const url = hub.url;
    const m = await hub.memoize("b/k", { n: 1 });
    const got = await hub.getWithRev("b/k");
    let notFound;
    try {
      await hub.get("b/none");
    } catch (e) {
      notFound = { isMemhubError: e instanceof MemhubError, code: e.code, data: e.data };
    }
    const sub = await hub.subscribe("b/k");
    const seen = [];
    const loop = (async () => {
      for await (const ev of sub) {
        seen.push(ev);
        if (seen.length === 2) break;
      }
    })();
    await hub.update("b/k", { n: 2 });
    await hub.delete("b/k");
    await loop;
    const many = await Promise.all(Array.from({ length: 50 }, () => hub.incr("b/n")));
    await hub.close();
    return { url, m, got, notFound, snapshot: sub.snapshot, seen, maxIncr: Math.max(...many.map((r) => r.value)) };
  });
  assert.equal(out.url, hub.url);
  assert.deepEqual(out.m.value, { n: 1 });
  assert.deepEqual(out.got, { value: { n: 1 }, rev: out.m.rev });
  assert.deepEqual(out.notFound, { isMemhubError: true, code: -32001, data: { key: "b/none" } });
  assert.deepEqual(out.snapshot, { exists: true, value: { n: 1 }, rev: out.m.rev });
  assert.deepEqual(
    out.seen.map((e) => e.event),
    ["update", "delete"],
  );
  assert.equal(out.maxIncr, 50);
  assert.deepEqual(page.errors, []);
});

test("in a browser: the token goes in ?token=; a wrong one fails clearly after maxRetry", async (t) => {
  if (skip) return t.skip(skip);
  const hub = await startHub(["--token", "br0wser+t/ken", "--read-token", "reader"]);
  t.after(() => hub.stop());
  const page = await hubPage(hub);
  t.after(() => page.context().close());
  const out = await page.evaluate(async () => {
    const { connect } = window.memhub;
    const result = {};
    try {
      await connect(undefined, { token: "not-it", maxRetry: 1, retryDelayMs: 20 });
    } catch (e) {
      result.wrong = { code: e.code, message: e.message };
    }
    const ok = await connect(undefined, { token: "br0wser+t/ken" });
    result.write = await ok.update("b/t", 1);
    await ok.close();
    const ro = await connect(undefined, { token: "reader" });
    result.read = await ro.get("b/t");
    try {
      await ro.update("b/t", 2);
    } catch (e) {
      result.forbidden = { code: e.code, data: e.data };
    }
    await ro.close();
    return result;
  });
  assert.equal(out.wrong.code, "connect failed");
  assert.match(out.wrong.message, /token/);
  assert.equal(out.wrong.message.includes("not-it"), false);
  assert.equal(out.write.created, true);
  assert.equal(out.read, 1);
  assert.deepEqual(out.forbidden, { code: -32010, data: { method: "update" } });
});

test("in a browser: a hub restart resumes the subscription with a synthesized event", async (t) => {
  if (skip) return t.skip(skip);
  const hub = await startHub();
  t.after(() => hub.stop());
  const page = await hubPage(hub);
  t.after(() => page.context().close());
  await page.evaluate(async () => {
    const { connect } = window.memhub;
    window.events = [];
    window.reconnects = 0;
    const hub = await connect(undefined, { maxRetry: 400, retryDelayMs: 25, onReconnect: () => window.reconnects++ });
    window.hub = hub;
    await hub.update("b/r", "before");
    await hub.subscribe("b/r", (ev) => window.events.push(ev));
  });
  await hub.restart();
  await page.waitForFunction(() => window.reconnects === 1, null, { timeout: 10000 });
  assert.deepEqual(await page.evaluate(() => window.events), [{ event: "delete", key: "b/r", synthetic: true }]);
  const w = await connect(hub.url);
  const { rev } = await w.update("b/r", "after");
  await w.close();
  await page.waitForFunction(() => window.events.length === 2, null, { timeout: 5000 });
  assert.deepEqual((await page.evaluate(() => window.events))[1], { event: "update", key: "b/r", value: "after", rev });
  await page.evaluate(() => window.hub.close());
  assert.deepEqual(page.errors, []);
});
