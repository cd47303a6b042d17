// Tokens: passed as ?token= (URL-encoded), wrong tokens refused without
// endless retries, read tokens refused on mutating calls (-32010).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ErrorCode, MemhubError } from "../../../web/memhub.js";
import { WebSocket, collector, connect, startHub } from "./hub.js";

const WRITE = "w-s3cr3t/+&=é";
const READ = "r-t0ken?#%";

let hub;

before(async () => {
  hub = await startHub(["--token", WRITE, "--read-token", READ]);
});

after(async () => {
  await hub?.stop();
});

/** A WebSocket class that counts the sockets it opens and keeps their URLs. */
function countingWebSocket() {
  const urls = [];
  class Counting extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      urls.push(url);
    }
  }
  Counting.urls = urls;
  return Counting;
}

test("the right write token is accepted, URL-encoded in ?token=", async () => {
  const WS = countingWebSocket();
  const c = await connect(hub.url, { token: WRITE, WebSocket: WS });
  try {
    assert.equal(WS.urls.length, 1);
    assert.ok(WS.urls[0].endsWith(`?token=${encodeURIComponent(WRITE)}`), WS.urls[0]);
    assert.equal(c.url, hub.url, "the token is not part of the public url");
    await c.update("auth/k", 1);
    assert.equal(await c.get("auth/k"), 1);
    const l = await c.lock("auth/lock"); // the lock's own connection carries the token too
    assert.equal(await c.unlock(l), true);
  } finally {
    await c.close();
  }
});

test("a wrong token is refused at once (HTTP 401), without retrying", async () => {
  for (const token of ["not-the-token-42", undefined]) {
    const WS = countingWebSocket();
    const t0 = Date.now();
    const e = await connect(hub.url, { token, WebSocket: WS, maxRetry: 5, retryDelayMs: 2000 }).then(
      () => assert.fail("connected with a wrong token"),
      (err) => err,
    );
    assert.ok(e instanceof MemhubError);
    assert.equal(e.code, ErrorCode.CONNECT_FAILED);
    assert.equal(e.data.status, 401);
    assert.equal(e.data.auth, true);
    assert.match(e.message, /401/);
    assert.match(e.message, /token/);
    if (token) assert.equal(e.message.includes(token), false, "the message does not echo the token");
    assert.equal(WS.urls.length, 1, "no retry after an authentication failure");
    assert.ok(Date.now() - t0 < 2000);
  }
});

test("a foreign Origin is refused (HTTP 403) without retrying", async () => {
  const WS = countingWebSocket();
  const e = await connect(hub.url, {
    token: WRITE,
    WebSocket: WS,
    maxRetry: 5,
    retryDelayMs: 2000,
    webSocketOptions: { origin: "http://evil.example" },
  }).then(
    () => assert.fail("connected from a foreign origin"),
    (err) => err,
  );
  assert.equal(e.code, ErrorCode.CONNECT_FAILED);
  assert.deepEqual(e.data, { status: 403, auth: true });
  assert.match(e.message, /origin/);
  assert.equal(WS.urls.length, 1);
});

test("the token may go in a header instead (webSocketOptions, ws package)", async () => {
  // (An ASCII token: HTTP header values are not meant for others.)
  const c = await connect(hub.url, { WebSocket, webSocketOptions: { headers: { Authorization: `Bearer ${READ}` } } });
  try {
    assert.equal(await c.isMemoized("auth/header"), false);
    await assert.rejects(c.update("auth/header", 1), (e) => e.code === ErrorCode.FORBIDDEN);
  } finally {
    await c.close();
  }
});

test("a read token may read and subscribe, but not write (-32010)", async () => {
  const writer = await connect(hub.url, { token: WRITE });
  const reader = await connect(hub.url, { token: READ });
  try {
    await writer.update("auth/r", { v: 1 });
    assert.deepEqual(await reader.get("auth/r"), { v: 1 });
    assert.equal(await reader.isMemoized("auth/r"), true);
    assert.equal((await reader.keys({ prefix: "auth/" })).keys.length >= 1, true);
    assert.equal((await reader.stats()).connections >= 2, true);
    assert.equal((await reader.version()).protocol, 1);
    assert.equal((await reader.version()).role, "read");
    assert.equal((await writer.version()).role, "write");
    const got = collector();
    const sub = await reader.subscribe("auth/r", got);
    const calls = {
      update: () => reader.update("auth/r", 2),
      memoize: () => reader.memoize("auth/new", 2),
      delete: () => reader.delete("auth/r"),
      patch: () => reader.patch("auth/r", []),
      merge: () => reader.merge("auth/r", {}),
      incr: () => reader.incr("auth/n"),
      lock: () => reader.lock("auth/lock"),
      unlock: () => reader.unlock("auth/lock", "0".repeat(32)),
    };
    for (const [method, call] of Object.entries(calls)) {
      await assert.rejects(call(), (e) => {
        assert.ok(e instanceof MemhubError);
        assert.equal(e.code, ErrorCode.FORBIDDEN, method);
        assert.equal(e.code, -32010);
        assert.deepEqual(e.data, { method });
        return true;
      });
    }
    assert.deepEqual(await reader.get("auth/r"), { v: 1 }, "nothing changed");
    const { rev } = await writer.update("auth/r", { v: 2 });
    const [ev] = await got.waitFor(1);
    assert.deepEqual(ev, { event: "update", key: "auth/r", value: { v: 2 }, rev });
    await sub.unsubscribe();
  } finally {
    await reader.close();
    await writer.close();
  }
});
