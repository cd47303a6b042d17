// Locks: try-once, waiting (FIFO), fences, leases, wrong tokens, release on
// close, and that a waiting lock never delays the client's other calls.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ErrorCode, Lock, MemhubError } from "../../../web/memhub.js";
import { connect, startHub, until, within } from "./hub.js";

let hub;
let a;
let b;

before(async () => {
  hub = await startHub();
  a = await connect(hub.url);
  b = await connect(hub.url);
});

after(async () => {
  await a?.close();
  await b?.close();
  await hub?.stop();
});

test("lock returns {name, token, fence}; a held lock refuses others (-32003); unlock releases", async () => {
  const l = await a.lock("deploy");
  assert.ok(l instanceof Lock);
  assert.equal(l.name, "deploy");
  assert.match(l.token, /^[0-9a-f]{32}$/);
  assert.equal(typeof l.fence, "number");
  assert.equal(l.connected, true);
  assert.deepEqual(Object.keys(l).sort(), ["fence", "name", "token"]);
  const e = await b.lock("deploy").catch((x) => x);
  assert.ok(e instanceof MemhubError);
  assert.equal(e.code, ErrorCode.LOCK_TIMEOUT);
  assert.deepEqual(e.data, { name: "deploy" });
  // Not reentrant either.
  await assert.rejects(a.lock("deploy"), (x) => x.code === -32003);
  assert.equal((await a.stats()).locks_held, 1);
  assert.equal(await a.unlock(l), true);
  assert.equal(l.connected, false);
  const l2 = await b.lock("deploy");
  assert.ok(l2.fence > l.fence, "fences grow");
  await b.unlock(l2);
  assert.equal((await a.stats()).locks_held, 0);
});

test("unlock with a wrong or used token answers -32004", async () => {
  const l = await a.lock("u/lock");
  await assert.rejects(a.unlock("u/lock", "f".repeat(32)), (e) => {
    assert.equal(e.code, ErrorCode.LOCK_NOT_HELD);
    assert.deepEqual(e.data, { name: "u/lock" });
    return true;
  });
  assert.equal(await a.unlock(l), true);
  await assert.rejects(a.unlock(l), (e) => e.code === -32004);
  await assert.rejects(a.unlock("u/lock", l.token), (e) => e.code === -32004);
});

test("unlock by name and token works from another client", async () => {
  const l = await a.lock("x/lock");
  assert.equal(await b.unlock(l.name, l.token), true);
  const again = await b.lock("x/lock");
  await b.unlock(again);
  await assert.rejects(a.unlock(l), (e) => e.code === -32004);
});

test("a waiting lock is granted on unlock, in FIFO order, without delaying other calls", async () => {
  const held = await a.lock("q/lock");
  const order = [];
  const first = b.lock("q/lock", { waitMs: 10000 }).then((l) => {
    order.push("first");
    return l;
  });
  await until(async () => (await a.stats()).lock_waiters === 1, 5000, "the first waiter");
  const c = await connect(hub.url);
  const second = c.lock("q/lock", { waitMs: 10000 }).then((l) => {
    order.push("second");
    return l;
  });
  await until(async () => (await a.stats()).lock_waiters === 2, 5000, "the second waiter");
  // b's other calls are answered while its lock waits (own connection).
  await within(b.update("q/other", 1), 1000, "b's update while its lock waits");
  assert.equal(await b.get("q/other"), 1);
  assert.deepEqual(order, []);
  await a.unlock(held);
  const l1 = await within(first, 5000, "the first waiter's grant");
  assert.deepEqual(order, ["first"]);
  assert.ok(l1.fence > held.fence);
  await b.unlock(l1);
  const l2 = await within(second, 5000, "the second waiter's grant");
  assert.deepEqual(order, ["first", "second"]);
  assert.ok(l2.fence > l1.fence);
  await c.unlock(l2);
  await c.close();
});

test("waitMs runs out with -32003", async () => {
  const held = await a.lock("w/lock");
  const t0 = Date.now();
  await assert.rejects(b.lock("w/lock", { waitMs: 100 }), (e) => e.code === -32003);
  assert.ok(Date.now() - t0 >= 90);
  await a.unlock(held);
});

test("a lease (ttlMs) releases the lock; the old token is then refused", async () => {
  const l = await a.lock("lease/lock", { ttlMs: 50 });
  const next = await b.lock("lease/lock", { waitMs: 5000 });
  assert.ok(next.fence > l.fence);
  await assert.rejects(a.unlock(l), (e) => e.code === ErrorCode.LOCK_NOT_HELD);
  await b.unlock(next);
});

test("closing the client releases its locks", async () => {
  const c = await connect(hub.url);
  await c.lock("close/lock");
  const waiting = b.lock("close/lock", { waitMs: 5000 });
  await until(async () => (await a.stats()).lock_waiters === 1, 5000, "the waiter");
  await c.close();
  const l = await within(waiting, 5000, "the grant after close");
  await b.unlock(l);
});
