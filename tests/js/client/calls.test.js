// Every call of web/memhub.js against the real hub: results and errors.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ErrorCode, MemhubError, PROTOCOL_VERSION } from "../../../web/memhub.js";
import { connect, startHub } from "./hub.js";

let hub;
let c;

before(async () => {
  hub = await startHub();
  c = await connect(hub.url);
});

after(async () => {
  await c?.close();
  await hub?.stop();
});

/** Asserts that `promise` rejects with a MemhubError of `code`; returns it. */
async function rejectsWith(promise, code) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof MemhubError, `expected a MemhubError, got ${e}`);
    assert.ok(e instanceof Error);
    assert.equal(e.name, "MemhubError");
    assert.equal(e.code, code, `code of: ${e.message}`);
    assert.equal(typeof e.message, "string");
    assert.ok(e.message.length > 0);
    return e;
  }
  assert.fail(`expected a rejection with code ${code}`);
}

test("version and stats", async () => {
  const v = await c.version();
  assert.equal(v.name, "memhub");
  assert.equal(v.protocol, PROTOCOL_VERSION);
  assert.equal(typeof v.version, "string");
  assert.equal(typeof v.epoch, "string");
  assert.equal(c.epoch, v.epoch);
  assert.equal(c.connected, true);
  assert.equal(c.url, hub.url);
  const s = await c.stats();
  for (const f of ["keys", "connections", "subscriptions", "rev", "uptime_ms"]) {
    assert.equal(typeof s[f], "number", f);
  }
  assert.ok(s.connections >= 1);
});

test("memoize stores only when absent and returns the value held", async () => {
  const a = await c.memoize("m/cfg", { mode: "fast" });
  assert.deepEqual(a.value, { mode: "fast" });
  assert.equal(a.created, true);
  assert.equal(typeof a.rev, "number");
  const b = await c.memoize("m/cfg", { mode: "slow" });
  assert.deepEqual(b, { value: { mode: "fast" }, rev: a.rev, created: false });
  const n = await c.memoize("m/null", null);
  assert.equal(n.value, null);
  assert.equal(n.created, true);
  const t = await c.memoize("m/ttl", 1, { ttlMs: 60000 });
  assert.equal(t.created, true);
  const info = await c.keyInfo("m/ttl");
  assert.equal(typeof info.expires_at_ms, "number");
  assert.ok(info.expires_at_ms > Date.now());
});

test("get, getWithRev, tryGet", async () => {
  const { rev } = await c.update("g/k", [1, 2]);
  assert.deepEqual(await c.get("g/k"), [1, 2]);
  assert.deepEqual(await c.getWithRev("g/k"), { value: [1, 2], rev });
  assert.deepEqual(await c.tryGet("g/k"), [1, 2]);
  const e = await rejectsWith(c.get("g/absent"), ErrorCode.NOT_FOUND);
  assert.equal(e.code, -32001);
  assert.deepEqual(e.data, { key: "g/absent" });
  await rejectsWith(c.getWithRev("g/absent"), -32001);
  assert.equal(await c.tryGet("g/absent"), undefined);
  await c.update("g/null", null);
  assert.equal(await c.get("g/null"), null);
  assert.equal(await c.tryGet("g/null"), null);
});

test("update: created, ifRev and ttlMs", async () => {
  const a = await c.update("u/k", "one");
  assert.equal(a.created, true);
  const b = await c.update("u/k", "two");
  assert.equal(b.created, false);
  assert.ok(b.rev > a.rev);
  const e = await rejectsWith(c.update("u/k", "x", { ifRev: a.rev }), ErrorCode.REV_MISMATCH);
  assert.deepEqual(e.data, { rev: b.rev });
  assert.equal(await c.get("u/k"), "two");
  const ok = await c.update("u/k", "three", { ifRev: b.rev });
  assert.ok(ok.rev > b.rev);
  // ifRev 0: only if absent.
  const e0 = await rejectsWith(c.update("u/k", "x", { ifRev: 0 }), -32002);
  assert.equal(e0.data.rev, ok.rev);
  assert.equal((await c.update("u/new", 1, { ifRev: 0 })).created, true);
  // On an absent key a mismatch is -32002 with rev 0, not -32001.
  const ea = await rejectsWith(c.update("u/none", 1, { ifRev: 5 }), -32002);
  assert.deepEqual(ea.data, { rev: 0 });
  // ttlMs sets an expiry, an update without it clears it.
  await c.update("u/ttl", 1, { ttlMs: 60000 });
  assert.equal(typeof (await c.keyInfo("u/ttl")).expires_at_ms, "number");
  await c.update("u/ttl", 2);
  assert.equal((await c.keyInfo("u/ttl")).expires_at_ms, undefined);
});

test("delete and isMemoized", async () => {
  const { rev } = await c.update("d/k", 1);
  assert.equal(await c.isMemoized("d/k"), true);
  const e = await rejectsWith(c.delete("d/k", { ifRev: rev + 100 }), -32002);
  assert.equal(e.data.rev, rev);
  const d = await c.delete("d/k", { ifRev: rev });
  assert.ok(d.rev > rev);
  assert.deepEqual(Object.keys(d), ["rev"]);
  assert.equal(await c.isMemoized("d/k"), false);
  const nf = await rejectsWith(c.delete("d/k"), ErrorCode.NOT_FOUND);
  assert.deepEqual(nf.data, { key: "d/k" });
  await c.update("d/null", null);
  assert.equal(await c.isMemoized("d/null"), true);
  await c.delete("d/null");
  assert.equal(await c.isMemoized("d/null"), false);
});

test("keys pages, iterKeys and keyInfo", async () => {
  await c.update("k/1", "a");
  await c.update("k/2", [1, 2]);
  await c.update("k/3", true, { ttlMs: 60000 });
  const p1 = await c.keys({ prefix: "k/", limit: 2 });
  assert.deepEqual(
    p1.keys.map((k) => k.key),
    ["k/1", "k/2"],
  );
  assert.equal(p1.next, "k/2");
  assert.equal(p1.keys[0].bytes, 3);
  assert.equal(p1.keys[1].bytes, 5);
  assert.equal(typeof p1.keys[0].rev, "number");
  assert.equal("expires_at_ms" in p1.keys[0], false);
  const p2 = await c.keys({ prefix: "k/", limit: 2, after: p1.next });
  assert.deepEqual(
    p2.keys.map((k) => k.key),
    ["k/3"],
  );
  assert.equal(p2.next, null);
  assert.equal(typeof p2.keys[0].expires_at_ms, "number");
  const all = [];
  for await (const k of c.iterKeys("k/")) all.push(k.key);
  assert.deepEqual(all, ["k/1", "k/2", "k/3"]);
  const whole = await c.keys();
  assert.ok(whole.keys.length >= 3);
  assert.deepEqual(await c.keyInfo("k/2"), p1.keys[1]);
  assert.equal(await c.keyInfo("k/"), undefined);
  assert.equal(await c.keyInfo("k/9"), undefined);
  await rejectsWith(c.keys({ limit: 0 }), ErrorCode.INVALID_PARAMS);
});

test("iterKeys crosses pages of 1000", async () => {
  const n = 1203;
  await Promise.all(Array.from({ length: n }, (_, i) => c.update(`big/${String(i).padStart(5, "0")}`, i)));
  let count = 0;
  let prev = "";
  for await (const k of c.iterKeys("big/")) {
    assert.ok(k.key > prev);
    prev = k.key;
    count += 1;
  }
  assert.equal(count, n);
});

test("patch: RFC 6902, all or none", async () => {
  await c.update("p/doc", { title: "Notes", tags: ["a"] });
  const r = await c.patch("p/doc", [
    { op: "add", path: "/tags/-", value: "b" },
    { op: "replace", path: "/title", value: "Plans" },
  ]);
  assert.deepEqual(r.value, { tags: ["a", "b"], title: "Plans" });
  assert.equal(typeof r.rev, "number");
  const e = await rejectsWith(
    c.patch("p/doc", [
      { op: "remove", path: "/tags/0" },
      { op: "test", path: "/title", value: "Notes" },
    ]),
    ErrorCode.PATCH_FAILED,
  );
  assert.deepEqual(e.data, { op_index: 1 });
  assert.deepEqual(await c.get("p/doc"), { tags: ["a", "b"], title: "Plans" });
  await rejectsWith(c.patch("p/doc", [{ op: "add", path: "title", value: 1 }]), ErrorCode.INVALID_PARAMS);
  await rejectsWith(c.patch("p/nope", [{ op: "add", path: "/a", value: 1 }]), ErrorCode.NOT_FOUND);
  await rejectsWith(c.patch("p/doc", [], { ifRev: 1 }), ErrorCode.REV_MISMATCH);
  const same = await c.patch("p/doc", [], { ifRev: r.rev, ttlMs: 60000 });
  assert.ok(same.rev > r.rev);
  assert.equal(typeof (await c.keyInfo("p/doc")).expires_at_ms, "number");
});

test("merge: RFC 7396, absent key merges onto null", async () => {
  const a = await c.merge("mg/k", { a: 1, b: null });
  assert.deepEqual(a.value, { a: 1 });
  assert.equal(a.created, true);
  const b = await c.merge("mg/k", { b: { c: 2 }, a: null });
  assert.deepEqual(b.value, { b: { c: 2 } });
  assert.equal(b.created, false);
  assert.ok(b.rev > a.rev);
  await rejectsWith(c.merge("mg/k", { x: 1 }, { ifRev: a.rev }), -32002);
  const t = await c.merge("mg/t", { x: 1 }, { ttlMs: 60000, ifRev: 0 });
  assert.equal(t.created, true);
});

test("incr: default 1, by, floats, errors", async () => {
  const a = await c.incr("i/n");
  assert.deepEqual([a.value, a.created], [1, true]);
  const b = await c.incr("i/n", 10);
  assert.deepEqual([b.value, b.created], [11, false]);
  const f = await c.incr("i/n", -0.5);
  assert.equal(f.value, 10.5);
  const o = await c.incr("i/n", { by: 2, ifRev: f.rev });
  assert.equal(o.value, 12.5);
  await rejectsWith(c.incr("i/n", 1, { ifRev: f.rev }), -32002);
  await c.update("i/s", "text");
  const e = await rejectsWith(c.incr("i/s"), ErrorCode.NOT_A_NUMBER);
  assert.deepEqual(e.data, { key: "i/s" });
  await rejectsWith(c.incr("i/s", "x"), ErrorCode.INVALID_PARAMS);
});

test("invalid params and unknown methods", async () => {
  await rejectsWith(c.update("v/k", 1, { ttlMs: 0 }), ErrorCode.INVALID_PARAMS);
  await rejectsWith(c.update("", 1), -32602);
  await rejectsWith(c.get("x".repeat(2000)), -32602);
  await rejectsWith(c.call("get", {}), -32602);
  const e = await rejectsWith(c.call("frobnicate"), ErrorCode.METHOD_NOT_FOUND);
  assert.match(e.message, /frobnicate/);
  // The connection survives bad input.
  assert.equal(await c.isMemoized("v/k"), false);
});

test("call() sends any method and returns the raw result", async () => {
  const r = await c.call("update", { key: "raw/k", value: 7 });
  assert.deepEqual(Object.keys(r).sort(), ["created", "rev"]);
  assert.equal(r.created, true);
  assert.deepEqual(await c.call("get", { key: "raw/k" }), { value: 7, rev: r.rev });
  assert.equal(await c.call("is_memoized", { key: "raw/k" }), true);
});

test("many requests in flight at once are routed by id", async () => {
  const n = 500;
  const results = await Promise.all(Array.from({ length: n }, () => c.incr("flight/counter")));
  const values = results.map((r) => r.value).sort((x, y) => x - y);
  assert.deepEqual(
    values,
    Array.from({ length: n }, (_, i) => i + 1),
  );
  assert.equal(new Set(results.map((r) => r.rev)).size, n);
  assert.equal(await c.get("flight/counter"), n);
  // Mixed calls, each answered with its own result.
  const mixed = await Promise.all(
    Array.from({ length: 200 }, (_, i) => (i % 2 ? c.update(`flight/${i}`, i).then(() => c.get(`flight/${i}`)) : c.tryGet(`flight/none/${i}`))),
  );
  mixed.forEach((v, i) => assert.equal(v, i % 2 ? i : undefined));
  // Errors in flight reject only their own call.
  const settled = await Promise.allSettled([c.get("flight/none"), c.get("flight/counter"), c.get("flight/none2")]);
  assert.deepEqual(
    settled.map((s) => s.status),
    ["rejected", "fulfilled", "rejected"],
  );
  assert.equal(settled[1].value, n);
});

test("two clients see each other's writes", async () => {
  const d = await connect(hub.url);
  try {
    await c.update("shared/k", { from: "c" });
    assert.deepEqual(await d.get("shared/k"), { from: "c" });
    assert.equal((await d.stats()).connections >= 2, true);
  } finally {
    await d.close();
  }
});

test("requestTimeoutMs rejects a call the hub does not answer in time", async () => {
  const holder = await connect(hub.url);
  const slow = await connect(hub.url, { requestTimeoutMs: 200 });
  try {
    const held = await holder.lock("to/lock");
    // A raw lock that waits holds up this connection's answers.
    const e = await rejectsWith(slow.call("lock", { name: "to/lock", wait_ms: 60000 }), ErrorCode.TIMEOUT);
    assert.match(e.message, /200 ms/);
    await holder.unlock(held);
  } finally {
    await slow.close();
    await holder.close();
  }
});

test("connect options: no WebSocket, bad URL, nothing listening", async () => {
  const { connect: bare } = await import("../../../web/memhub.js");
  await assert.rejects(bare(hub.url), (e) => e instanceof MemhubError && e.code === ErrorCode.CONNECT_FAILED && /WebSocket/.test(e.message));
  await assert.rejects(connect("ftp://127.0.0.1/"), (e) => e.code === ErrorCode.CONNECT_FAILED);
  // Port 1 on loopback: nothing listens there.
  const t0 = Date.now();
  await assert.rejects(connect("ws://127.0.0.1:1/ws", { maxRetry: 1, retryDelayMs: 10 }), (e) => {
    assert.equal(e.code, ErrorCode.CONNECT_FAILED);
    assert.match(e.message, /127\.0\.0\.1:1/);
    return true;
  });
  assert.ok(Date.now() - t0 < 5000);
  // http:// and a bare host:port are turned into the /ws endpoint.
  const h = await connect(`http://127.0.0.1:${hub.port}`);
  assert.equal(h.url, hub.url);
  assert.equal((await h.version()).protocol, 1);
  await h.close();
});

test("a hub that speaks another protocol version is refused unless ignoreVersion", async (t) => {
  const { WebSocketServer } = await import("ws");
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => wss.once("listening", resolve));
  t.after(() => new Promise((resolve) => wss.close(resolve)));
  wss.on("connection", (sock) => {
    sock.on("message", (data) => {
      const req = JSON.parse(String(data));
      const result = req.method === "version" ? { name: "memhub", version: "9.0.0", protocol: 2, epoch: "x" } : "ok";
      sock.send(JSON.stringify({ jsonrpc: "2.0", id: req.id, result }));
    });
  });
  const url = `ws://127.0.0.1:${wss.address().port}/ws`;
  await assert.rejects(connect(url, { maxRetry: 3, retryDelayMs: 2000 }), (e) => {
    assert.equal(e.code, ErrorCode.PROTOCOL);
    assert.deepEqual(e.data, { hub: 2, client: 1 });
    assert.match(e.message, /protocol 2/);
    return true;
  });
  const c = await connect(url, { ignoreVersion: true });
  assert.equal(await c.call("anything"), "ok");
  await c.close();
  for (const client of wss.clients) client.terminate();
});

test("the hub serves the client at /memhub.js", async () => {
  const res = await fetch(`${hub.httpUrl}/memhub.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /javascript/);
  const text = await res.text();
  assert.match(text, /export async function connect/);
  assert.match(text, /export class MemhubError/);
});

test("close() rejects later calls with code closed", async () => {
  const d = await connect(hub.url);
  const inflight = d.get("closed/none").catch((e) => e);
  await d.close();
  const e = await inflight;
  assert.ok(e instanceof MemhubError);
  assert.ok([ErrorCode.CLOSED, ErrorCode.NOT_FOUND].includes(e.code));
  assert.equal(d.closed, true);
  assert.equal(d.connected, false);
  await rejectsWith(d.get("x"), ErrorCode.CLOSED);
  await rejectsWith(d.lock("x"), ErrorCode.CLOSED);
  await rejectsWith(d.subscribe("x"), ErrorCode.CLOSED);
  await d.close(); // twice is fine
});
