// Subscriptions: snapshots, live events, prefix subscriptions, for-await,
// onEvent, unsubscribe, and close() ending iterators.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ErrorCode, MemhubError, Subscription } from "../../../web/memhub.js";
import { WebSocket, collector, connect, nextEvent, startHub, until, within } from "./hub.js";

let hub;
let c; // watches
let w; // writes

before(async () => {
  hub = await startHub();
  c = await connect(hub.url);
  w = await connect(hub.url);
});

after(async () => {
  await c?.close();
  await w?.close();
  await hub?.stop();
});

test("key subscription: snapshot of a present key, then every change", async () => {
  const { rev } = await w.update("s/k", { n: 1 });
  const sub = await c.subscribe("s/k");
  assert.ok(sub instanceof Subscription);
  assert.equal(sub.key, "s/k");
  assert.equal(sub.prefix, undefined);
  assert.deepEqual(sub.snapshot, { exists: true, value: { n: 1 }, rev });
  const u = await w.update("s/k", { n: 2 });
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "s/k", value: { n: 2 }, rev: u.rev });
  const m = await w.merge("s/k", { m: true });
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "s/k", value: { m: true, n: 2 }, rev: m.rev });
  const p = await w.patch("s/k", [{ op: "remove", path: "/m" }]);
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "s/k", value: { n: 2 }, rev: p.rev });
  const d = await w.delete("s/k");
  assert.deepEqual(await nextEvent(sub), { event: "delete", key: "s/k", rev: d.rev });
  assert.deepEqual(sub.state, { exists: false, rev: d.rev });
  const i = await w.incr("s/k", 5);
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "s/k", value: 5, rev: i.rev });
  assert.deepEqual(sub.state, { exists: true, value: 5, rev: i.rev });
  // The initial snapshot does not move.
  assert.deepEqual(sub.snapshot, { exists: true, value: { n: 1 }, rev });
  assert.equal(await sub.unsubscribe(), true);
});

test("key subscription of an absent key; a null value is a value; memoize that finds the key sends nothing", async () => {
  const sub = await c.subscribe("s/absent");
  assert.deepEqual(sub.snapshot, { exists: false });
  const a = await w.memoize("s/absent", null);
  const ev = await nextEvent(sub);
  assert.deepEqual(ev, { event: "update", key: "s/absent", value: null, rev: a.rev });
  assert.ok("value" in ev);
  await w.memoize("s/absent", "other"); // finds it: no event
  const b = await w.update("s/absent", "later");
  assert.equal((await nextEvent(sub)).rev, b.rev);
  await sub.unsubscribe();
});

test("expire events", async () => {
  const sub = await c.subscribe("s/ttl");
  const { rev } = await w.update("s/ttl", "short", { ttlMs: 30 });
  assert.equal((await nextEvent(sub)).rev, rev);
  const ev = await nextEvent(sub);
  assert.equal(ev.event, "expire");
  assert.equal(ev.key, "s/ttl");
  assert.ok(ev.rev > rev);
  assert.equal("value" in ev, false);
  assert.equal(await c.tryGet("s/ttl"), undefined);
  await sub.unsubscribe();
});

test("prefix subscription: every key under the prefix, no snapshot", async () => {
  const sub = await c.subscribePrefix("room/");
  assert.equal(sub.prefix, "room/");
  assert.equal(sub.key, undefined);
  assert.equal(sub.snapshot, null);
  assert.equal(sub.state, null);
  const a = await w.update("room/1", "a");
  await w.update("other/1", "not seen");
  const b = await w.update("room/2", [1]);
  const d = await w.delete("room/1");
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "room/1", value: "a", rev: a.rev });
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "room/2", value: [1], rev: b.rev });
  assert.deepEqual(await nextEvent(sub), { event: "delete", key: "room/1", rev: d.rev });
  await sub.unsubscribe();
  const all = await c.subscribePrefix("");
  await w.update("anything", 1);
  assert.equal((await nextEvent(all)).key, "anything");
  await all.unsubscribe();
});

test("onEvent callback receives events; for-await and onEvent together", async () => {
  const got = collector();
  const sub = await c.subscribe("s/cb", got);
  await w.update("s/cb", 1);
  await w.update("s/cb", 2);
  const evs = await got.waitFor(2);
  assert.deepEqual(
    evs.map((e) => e.value),
    [1, 2],
  );
  // Iteration started now sees the events from now on.
  const it = sub[Symbol.asyncIterator]();
  await w.update("s/cb", 3);
  assert.equal((await nextEvent(it)).value, 3);
  assert.deepEqual(
    got.events.map((e) => e.value),
    [1, 2, 3],
  );
  await sub.unsubscribe();
});

test("for await iterates events; break unsubscribes", async () => {
  const sub = await c.subscribe("s/iter");
  const writes = (async () => {
    for (let i = 1; i <= 5; i++) await w.update("s/iter", i);
  })();
  const seen = [];
  await within(
    (async () => {
      for await (const ev of sub) {
        seen.push(ev.value);
        if (ev.value === 5) break;
      }
    })(),
    5000,
    "five events",
  );
  await writes;
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.equal(sub.closed, true);
  assert.equal(await sub.unsubscribe(), false);
  assert.equal((await c.stats()).connection_subscriptions, 0);
});

test("unsubscribe stops events (and only for that subscription)", async () => {
  const gone = collector();
  const kept = collector();
  const subA = await c.subscribe("s/a", gone);
  const subB = await c.subscribe("s/b", kept);
  const subA2 = await c.subscribe("s/a"); // independent subscription to the same key
  assert.equal((await c.stats()).connection_subscriptions, 3);
  assert.equal(await subA.unsubscribe(), true);
  assert.equal(subA.closed, true);
  assert.equal((await c.stats()).connection_subscriptions, 2);
  await within(subA.ended, 1000, "ended");
  assert.deepEqual(await subA.next(), { value: undefined, done: true });
  await w.update("s/a", "after");
  await w.update("s/b", "marker");
  // The hub delivers a connection's events in order: once B's marker
  // (written after A's change) is here, A's event would have been too.
  await kept.waitFor(1);
  assert.equal((await nextEvent(subA2)).value, "after");
  assert.deepEqual(gone.events, []);
  await subB.unsubscribe();
  await subA2.unsubscribe();
});

test("subscribe errors: bad key, limit of subscriptions", async () => {
  await assert.rejects(c.subscribe(""), (e) => e instanceof MemhubError && e.code === ErrorCode.INVALID_PARAMS);
  const small = await startHub(["--max-subscriptions", "2"]);
  const d = await connect(small.url);
  try {
    await d.subscribe("a");
    await d.subscribePrefix("b");
    await assert.rejects(d.subscribe("c"), (e) => {
      assert.equal(e.code, ErrorCode.LIMIT_EXCEEDED);
      assert.equal(e.data.limit, "subscriptions");
      assert.equal(e.data.max, 2);
      return true;
    });
  } finally {
    await d.close();
    await small.stop();
  }
});

test("a lagged subscriber gets lagged, then the current state", async () => {
  const small = await startHub(["--outbound-max-events", "2"]);
  const d = await connect(small.url);
  const x = await connect(small.url);
  try {
    const sub = await d.subscribe("lag/k");
    // One JSON-RPC batch of 300 writes (sent raw: the client has no batch
    // call) overflows the 2-event queue.
    const raw = new WebSocket(small.url);
    await new Promise((resolve, reject) => {
      raw.once("open", resolve);
      raw.once("error", reject);
    });
    const batch = Array.from({ length: 300 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "update", params: { key: "lag/k", value: i } }));
    const answered = new Promise((resolve) => raw.once("message", resolve));
    raw.send(JSON.stringify(batch));
    assert.equal(JSON.parse(String(await answered)).length, 300);
    raw.close();
    const del = await x.delete("lag/k");
    const seen = [];
    for (;;) {
      const ev = await nextEvent(sub);
      seen.push(ev);
      if (ev.event === "delete") break;
    }
    assert.ok(seen.length < 300, `saw ${seen.length} events`);
    const lagged = seen.findIndex((e) => e.event === "lagged");
    assert.ok(lagged >= 0, "a lagged event");
    assert.deepEqual(seen[lagged], { event: "lagged", key: "lag/k" });
    const last = seen[seen.length - 1];
    assert.ok(last.rev >= del.rev);
    assert.deepEqual(sub.state.exists, false);
  } finally {
    await d.close();
    await x.close();
    await small.stop();
  }
});

test("close() ends iterators and subscriptions", async () => {
  const d = await connect(hub.url);
  const sub = await d.subscribe("s/close");
  const psub = await d.subscribePrefix("s/");
  const done = (async () => {
    const seen = [];
    for await (const ev of sub) seen.push(ev);
    return seen;
  })();
  const pending = psub.next();
  await w.update("s/close", 1);
  await d.close();
  const seen = await within(done, 2000, "the iterator to end");
  assert.ok(seen.length <= 1);
  const r = await within(pending, 2000, "next() to settle");
  // Either the event arrived before close, or the iterator ended.
  assert.ok(r.done || r.value.key === "s/close");
  await within(psub.ended, 2000, "prefix subscription to end");
  assert.equal(sub.closed, true);
  assert.equal(psub.closed, true);
  assert.equal(await sub.unsubscribe(), false);
});

test("a subscribe that timed out leaves no subscription behind when its answer comes late", async () => {
  const slow = await connect(hub.url, { requestTimeoutMs: 300 });
  try {
    const held = await w.lock("late/lock");
    // A raw lock that waits holds up every later answer on this connection.
    const lockCall = slow.call("lock", { name: "late/lock", wait_ms: 60000 }).catch((e) => e);
    const subCall = slow.subscribe("late/k").catch((e) => e);
    assert.equal((await lockCall).code, ErrorCode.TIMEOUT);
    assert.equal((await subCall).code, ErrorCode.TIMEOUT);
    await w.unlock(held); // now the hub answers both, late
    // The hub registered the subscription when it finally ran the request;
    // the client unsubscribes it as soon as the late answer arrives.
    await until(async () => (await slow.stats()).connection_subscriptions === 0, 5000, "the late subscription to be removed");
  } finally {
    await slow.close();
  }
});
