// Reconnect: after the link drops the client retries, re-subscribes every
// live subscription and synthesizes one event per subscription for what
// changed while it was away (like the Rust client).

import assert from "node:assert/strict";
import { test } from "node:test";

import { ErrorCode, MemhubError } from "../../../web/memhub.js";
import { collector, connect, nextEvent, startHub, startProxy, until, within } from "./hub.js";

/** onReconnect hook whose n-th call can be awaited. */
function reconnects() {
  let count = 0;
  const waiters = [];
  const hook = () => {
    count += 1;
    for (const w of waiters.splice(0)) w();
  };
  hook.count = () => count;
  hook.next = (ms = 10000) => {
    const target = count + 1;
    return within(
      new Promise((resolve) => {
        const check = () => (count >= target ? resolve() : waiters.push(check));
        check();
      }),
      ms,
      "a reconnect",
    );
  };
  return hook;
}

/**
 * A hub, a cuttable proxy in front of it, and a client through the proxy
 * (`options` for connect); all stopped when the test ends.
 */
async function behindProxy(t, options) {
  const hub = await startHub();
  t.after(() => hub.stop());
  const proxy = await startProxy(hub.port);
  t.after(() => proxy.close());
  const c = await connect(proxy.url, options);
  t.after(() => c.close());
  return { hub, proxy, c };
}

/** A client on the hub directly, closed when the test ends. */
async function direct(t, hub) {
  const w = await connect(hub.url);
  t.after(() => w.close());
  return w;
}

test("hub restart on the same port: subscriptions resume, a synthesized delete reports the lost key", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const onReconnect = reconnects();
  const c = await connect(hub.url, { maxRetry: 400, retryDelayMs: 25, onReconnect });
  t.after(() => c.close());
  const { rev } = await c.update("r/k", { v: 1 });
  const keyEvents = collector();
  const sub = await c.subscribe("r/k", keyEvents);
  const absentEvents = collector();
  await c.subscribe("r/absent", absentEvents);
  const prefix = await c.subscribePrefix("r/");
  assert.deepEqual(sub.snapshot, { exists: true, value: { v: 1 }, rev });
  const epoch = c.epoch;

  const reconnected = onReconnect.next();
  await hub.restart();
  await reconnected;

  assert.equal(c.connected, true);
  assert.notEqual(c.epoch, epoch, "a restarted in-memory hub has a new epoch");
  // The in-memory hub lost the key: one synthesized delete (no rev).
  assert.deepEqual(keyEvents.events, [{ event: "delete", key: "r/k", synthetic: true }]);
  assert.deepEqual(sub.state, { exists: false });
  // Absent before and after: nothing to report.
  assert.deepEqual(absentEvents.events, []);
  // A prefix subscription cannot know what it missed: lagged, re-list.
  assert.deepEqual(await nextEvent(prefix), { event: "lagged", synthetic: true });
  assert.equal(onReconnect.count(), 1);

  // Live events flow again on the resumed subscriptions.
  const u = await c.update("r/k", "after");
  assert.deepEqual((await keyEvents.waitFor(2))[1], { event: "update", key: "r/k", value: "after", rev: u.rev });
  assert.deepEqual(await nextEvent(prefix), { event: "update", key: "r/k", value: "after", rev: u.rev });
  assert.equal((await c.stats()).connection_subscriptions, 3);
});

test("link cut, hub alive: synthesized events for what changed while away (same epoch, revs compared)", async (t) => {
  const onReconnect = reconnects();
  const { hub, proxy, c } = await behindProxy(t, { maxRetry: 400, retryDelayMs: 25, onReconnect });
  const w = await direct(t, hub);

  await w.update("a/changed", 1);
  await w.update("a/deleted", 1);
  await w.update("a/same", 1);
  await w.update("a/rewritten", 1);
  const ev = {};
  for (const k of ["changed", "deleted", "same", "rewritten", "created", "absent"]) {
    ev[k] = collector();
    await c.subscribe(`a/${k}`, ev[k]);
  }
  const epoch = c.epoch;

  proxy.block();
  proxy.dropAll();
  await until(() => c.reconnecting, 5000, "the client to notice the cut");
  assert.equal(c.connected, false);
  const changed = await w.update("a/changed", 2);
  await w.delete("a/deleted");
  const rewritten = await w.update("a/rewritten", 1); // same value, new rev
  const created = await w.update("a/created", { x: null });
  const reconnected = onReconnect.next();
  proxy.unblock();
  await reconnected;

  assert.equal(c.epoch, epoch);
  assert.deepEqual(ev.changed.events, [{ event: "update", key: "a/changed", value: 2, rev: changed.rev, synthetic: true }]);
  assert.deepEqual(ev.deleted.events, [{ event: "delete", key: "a/deleted", synthetic: true }]);
  assert.deepEqual(ev.same.events, []);
  assert.deepEqual(ev.rewritten.events, [{ event: "update", key: "a/rewritten", value: 1, rev: rewritten.rev, synthetic: true }]);
  assert.deepEqual(ev.created.events, [{ event: "update", key: "a/created", value: { x: null }, rev: created.rev, synthetic: true }]);
  assert.deepEqual(ev.absent.events, []);

  // And live again.
  const next = await w.update("a/same", 2);
  assert.deepEqual(await ev.same.waitFor(1), [{ event: "update", key: "a/same", value: 2, rev: next.rev }]);
});

test("hub restarted while away, new value written before the client returns: synthesized update with it", async (t) => {
  const onReconnect = reconnects();
  const { hub, proxy, c } = await behindProxy(t, { maxRetry: 400, retryDelayMs: 25, onReconnect });
  await c.update("cfg", { mode: "old" });
  const sub = await c.subscribe("cfg");
  const epoch = c.epoch;

  proxy.block();
  await hub.restart(); // same port; the proxy's connections die with the old hub
  await until(() => c.reconnecting, 5000, "the client to notice the restart");
  const w = await direct(t, hub);
  const fresh = await w.update("cfg", { mode: "new" });
  const reconnected = onReconnect.next();
  proxy.unblock();
  await reconnected;

  assert.notEqual(c.epoch, epoch);
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "cfg", value: { mode: "new" }, rev: fresh.rev, synthetic: true });
  const live = await w.incr("n");
  assert.equal(live.value, 1);
  const u = await w.update("cfg", 3);
  assert.deepEqual(await nextEvent(sub), { event: "update", key: "cfg", value: 3, rev: u.rev });
});

test("a call in flight when the link drops rejects (disconnected); calls made while reconnecting wait for the link", async (t) => {
  const onReconnect = reconnects();
  const { hub, proxy, c } = await behindProxy(t, { maxRetry: 400, retryDelayMs: 25, onReconnect });
  const w = await direct(t, hub);
  await w.update("k", "v");

  // A raw lock that must wait keeps this request unanswered.
  const held = await w.lock("busy");
  const inflight = c.call("lock", { name: "busy", wait_ms: 60000 }).catch((e) => e);
  await until(async () => (await w.stats()).lock_waiters === 1, 5000, "the raw lock to wait");
  proxy.block();
  proxy.dropAll();
  const e = await within(inflight, 5000, "the in-flight call to fail");
  assert.ok(e instanceof MemhubError);
  assert.equal(e.code, ErrorCode.DISCONNECTED);
  await until(() => c.reconnecting, 5000, "reconnecting");

  let settled = false;
  const waiting = c.get("k").finally(() => {
    settled = true;
  });
  const writes = c.update("k2", 2);
  // The client keeps trying while blocked.
  const refused = proxy.state.refused;
  await until(() => proxy.state.refused >= refused + 2, 5000, "two refused attempts");
  assert.equal(settled, false);
  const reconnected = onReconnect.next();
  proxy.unblock();
  await reconnected;
  assert.equal(await within(waiting, 5000, "the waiting call"), "v");
  assert.equal((await writes).created, true);
  assert.equal(await w.get("k2"), 2);
  await w.unlock(held);
});

test("retries exhausted: iterators end, waiting calls reject, a later call connects again", async (t) => {
  const { hub, proxy, c } = await behindProxy(t, { maxRetry: 2, retryDelayMs: 20 });
  await c.update("k", 1);
  const sub = await c.subscribe("k");
  const psub = await c.subscribePrefix("");
  const iterated = (async () => {
    const seen = [];
    for await (const ev of sub) seen.push(ev);
    return seen;
  })();

  proxy.block();
  proxy.dropAll();
  await until(() => c.reconnecting, 5000, "reconnecting");
  const waiting = c.get("k").catch((e) => e);
  const e = await within(waiting, 5000, "the waiting call to fail");
  assert.ok(e instanceof MemhubError);
  assert.equal(e.code, ErrorCode.CONNECT_FAILED);
  assert.match(e.message, /2 reconnect attempt/);
  assert.deepEqual(await within(iterated, 5000, "the iterator to end"), []);
  await within(psub.ended, 5000, "the prefix subscription to end");
  assert.equal(sub.closed, true);
  assert.equal(c.reconnecting, false);
  assert.equal(c.connected, false);

  // Like the Rust client, a later call tries to connect once more.
  await assert.rejects(c.get("k"), (x) => x.code === ErrorCode.CONNECT_FAILED);
  proxy.unblock();
  assert.equal(await c.get("k"), 1);
  assert.equal(c.connected, true);
  const again = await c.subscribe("k");
  assert.deepEqual(again.snapshot.value, 1);
});

test("close() while reconnecting ends subscriptions and rejects waiting calls", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const proxy = await startProxy(hub.port);
  t.after(() => proxy.close());
  const c = await connect(proxy.url, { maxRetry: 1000, retryDelayMs: 20 });
  const sub = await c.subscribe("k");
  proxy.block();
  proxy.dropAll();
  await until(() => c.reconnecting, 5000, "reconnecting");
  const waiting = c.get("k").catch((e) => e);
  await c.close();
  const e = await within(waiting, 2000, "the waiting call");
  assert.equal(e.code, ErrorCode.CLOSED);
  assert.deepEqual(await within(sub.next(), 2000, "the iterator"), { value: undefined, done: true });
  await within(sub.ended, 2000, "ended");
});

test("the first connect retries until the hub is up", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const proxy = await startProxy(hub.port);
  t.after(() => proxy.close());
  proxy.block();
  const connecting = connect(proxy.url, { maxRetry: 400, retryDelayMs: 20 });
  await until(() => proxy.state.refused >= 2, 5000, "two refused attempts");
  proxy.unblock();
  const c = await within(connecting, 5000, "the connect");
  t.after(() => c.close());
  assert.equal((await c.version()).name, "memhub");
});
