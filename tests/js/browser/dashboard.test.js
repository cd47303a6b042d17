// The dashboard against a real hub: live list and inspector, editing (with
// if_rev conflicts), creating, deleting, expiry, the event log, layouts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHub, nodeClient, launchBrowser, openPage, waitFor, screenshot } from "./hub.js";

let hub;
let client;
let browser;
let page;
const pages = [];

const row = (key) => page.locator(`#key-list .key-row[data-key="${key}"]`);
const valueText = () => page.locator("#inspector-value").textContent();

async function select(key) {
  await row(key).click();
  await page.locator("#inspector-title", { hasText: key }).waitFor();
  await page.locator("#inspector-state", { hasText: /live|absent|deleted|expired/ }).waitFor();
}

before(async () => {
  hub = await startHub();
  client = await nodeClient(hub.wsUrl);
  browser = await launchBrowser();
  page = await openPage(browser);
  pages.push(page);
  await page.goto(hub.httpUrl);
  await page.locator("body[data-ready=true]").waitFor();
});

after(async () => {
  await browser?.close();
  await client?.close();
  await hub?.stop();
});

test("a key written by a Node client appears in the list and updates live in the inspector", async () => {
  const first = await client.update("app/config", { theme: "dark", retries: 3 });
  await row("app/config").waitFor();
  await page.locator("#conn-status[data-state=connected]").waitFor();

  // Keyboard: focus the row and press Enter.
  await row("app/config").focus();
  await page.keyboard.press("Enter");
  await page.locator("#inspector-title", { hasText: "app/config" }).waitFor();
  await page.locator("#inspector-value", { hasText: '"dark"' }).waitFor();
  assert.equal(await page.locator("#meta-rev").textContent(), String(first.rev));
  assert.equal(await page.locator("#meta-size").textContent(), `${JSON.stringify({ theme: "dark", retries: 3 }).length} B`);
  assert.equal(await page.locator("#meta-expiry").textContent(), "none");
  assert.equal(await row("app/config").getAttribute("aria-current"), "true");

  const second = await client.update("app/config", { theme: "light", retries: 4 }, { ttlMs: 60_000 });
  await page.locator("#inspector-value", { hasText: '"light"' }).waitFor();
  // Shown as a change (with the brief highlight), not as a fresh load.
  await page.locator('#inspector-value[data-changes="1"]').waitFor();
  await page.locator("#meta-rev", { hasText: String(second.rev) }).waitFor();
  await page.locator("#meta-expiry", { hasText: /^in \d/ }).waitFor();
  await page.locator("#meta-updated", { hasText: /^at \d/ }).waitFor();

  // The event log saw both writes, newest first.
  await page.locator(`#event-log li[data-key="app/config"]`).nth(1).waitFor();
  const firstRow = page.locator("#event-log li").first();
  assert.equal(await firstRow.getAttribute("data-event"), "update");
  assert.match(await firstRow.textContent(), new RegExp(`r${second.rev}`));
});

test("an edit in the dashboard is validated and then seen by a Node client", async () => {
  await client.update("app/edit", { a: 1 });
  await row("app/edit").waitFor();
  await select("app/edit");
  await page.locator("#edit-key").click();
  const area = page.locator("#editor-value");
  await area.waitFor();
  assert.equal(JSON.parse(await area.inputValue()).a, 1);

  // Invalid JSON: the parse error shows inline and Save is disabled.
  await area.fill('{"a": 2,');
  await page.locator("#editor-error").waitFor();
  assert.match(await page.locator("#editor-error").textContent(), /JSON|Unexpected|position|line/i);
  assert.equal(await page.locator("#editor-save").isDisabled(), true);
  assert.equal(await area.getAttribute("aria-invalid"), "true");

  await area.fill('{"a": 2, "note": "from the dashboard"}');
  await page.locator("#editor-error").waitFor({ state: "hidden" });
  // Ctrl+Enter saves.
  await area.press("Control+Enter");
  await page.locator("#editor").waitFor({ state: "hidden" });
  const got = await waitFor(async () => {
    const v = await client.tryGet("app/edit");
    return v && v.a === 2 ? v : undefined;
  }, { message: "the dashboard's edit to reach the Node client" });
  assert.deepEqual(got, { a: 2, note: "from the dashboard" });
  await page.locator("#inspector-value", { hasText: "from the dashboard" }).waitFor();
});

test("a concurrent edit is detected on save; Reload takes the other client's value", async () => {
  await client.update("doc/reload", { by: "node", n: 1 });
  await row("doc/reload").waitFor();
  await select("doc/reload");
  await page.locator("#edit-key").click();
  await page.locator("#editor-value").fill('{"by": "dashboard"}');

  const theirs = await client.update("doc/reload", { by: "node", n: 2 });
  // The editor warns at once, and keeps the text being typed.
  await page.locator("#editor-notice", { hasText: `rev ${theirs.rev}` }).waitFor();
  assert.equal(await page.locator("#editor-value").inputValue(), '{"by": "dashboard"}');

  await page.locator("#editor-save").click();
  await page.locator("#conflict").waitFor();
  assert.match(await page.locator("#conflict-text").textContent(), new RegExp(`now holds rev ${theirs.rev}`));
  await screenshot(page, "dashboard-conflict.png");
  assert.equal(await page.locator("#editor-save").isDisabled(), true, "Save waits for Reload or Overwrite");
  // Nothing was written.
  assert.deepEqual(await client.get("doc/reload"), { by: "node", n: 2 });

  await page.locator("#conflict-reload").click();
  await page.locator("#conflict").waitFor({ state: "hidden" });
  assert.deepEqual(JSON.parse(await page.locator("#editor-value").inputValue()), { by: "node", n: 2 });

  // Saving after the reload works (its if_rev is now current).
  await page.locator("#editor-value").fill('{"by": "node", "n": 3}');
  await page.locator("#editor-save").click();
  await page.locator("#editor").waitFor({ state: "hidden" });
  await waitFor(async () => (await client.get("doc/reload")).n === 3, { message: "the saved value" });
});

test("a concurrent edit is detected on save; Overwrite keeps the dashboard's value", async () => {
  await client.update("doc/overwrite", { by: "node" });
  await row("doc/overwrite").waitFor();
  await select("doc/overwrite");
  await page.locator("#edit-key").click();
  await page.locator("#editor-value").fill('{"by": "dashboard"}');
  const theirs = await client.update("doc/overwrite", { by: "node", again: true });
  await page.locator("#editor-notice", { hasText: `rev ${theirs.rev}` }).waitFor();
  await page.locator("#editor-save").click();
  await page.locator("#conflict").waitFor();
  await page.locator("#conflict-overwrite").click();
  await page.locator("#editor").waitFor({ state: "hidden" });
  await waitFor(async () => (await client.get("doc/overwrite")).by === "dashboard", { message: "the overwrite" });
  const { rev } = await client.getWithRev("doc/overwrite");
  assert.ok(rev > theirs.rev);
  await page.locator("#meta-rev", { hasText: String(rev) }).waitFor();
});

test("a key is created from the New key dialog, and an existing one is refused", async () => {
  await page.locator("#inspector-value").focus();
  await page.keyboard.press("n");
  const dialog = page.locator("#create-dialog[open]");
  await dialog.waitFor();
  await page.locator("#create-key").fill("made/in-ui");
  await page.locator("#create-value").fill("[1, 2");
  await page.locator("#create-error").waitFor();
  await page.locator("#create-value").fill('[1, 2, {"three": 3}]');
  await page.locator("#create-ttl").fill("120000");
  await page.locator("#create-submit").click();
  await dialog.waitFor({ state: "detached" });
  assert.deepEqual(await client.get("made/in-ui"), [1, 2, { three: 3 }]);
  const info = await client.keyInfo("made/in-ui");
  assert.ok(info.expires_at_ms > Date.now());
  await page.locator("#inspector-title", { hasText: "made/in-ui" }).waitFor();
  await row("made/in-ui").waitFor();

  await page.locator("#new-key").click();
  await dialog.waitFor();
  await page.locator("#create-key").fill("app/config");
  await page.locator("#create-submit").click();
  await page.locator("#create-error", { hasText: "already exists" }).waitFor();
  await page.locator("#create-cancel").click();
  await dialog.waitFor({ state: "detached" });
  assert.equal((await client.get("app/config")).theme, "light");
});

test("delete asks for confirmation in a dialog; cancel keeps the key, confirm deletes it", async () => {
  await client.update("doomed", "bye");
  await row("doomed").waitFor();
  await select("doomed");
  const dialog = page.locator("#delete-dialog[open]");

  await page.locator("#delete-key").click();
  await dialog.waitFor();
  assert.equal(await page.locator("#delete-key-name").textContent(), "doomed");
  await page.locator("#delete-cancel").click();
  await dialog.waitFor({ state: "detached" });
  assert.equal(await client.isMemoized("doomed"), true);

  await page.locator("#delete-key").click();
  await dialog.waitFor();
  await page.locator("#delete-confirm").click();
  await dialog.waitFor({ state: "detached" });
  await waitFor(async () => !(await client.isMemoized("doomed")), { message: "the key to be deleted" });
  await page.locator("#inspector-banner", { hasText: "was deleted" }).waitFor();
  await page.locator("#inspector-state", { hasText: "deleted" }).waitFor();
  await row("doomed").waitFor({ state: "detached" });
  assert.equal(await page.locator("#edit-key").isDisabled(), true);

  // Recreated by another client: the inspector is live again.
  await client.update("doomed", "back");
  await page.locator("#inspector-state", { hasText: "live" }).waitFor();
  await page.locator("#inspector-value", { hasText: '"back"' }).waitFor();
  await page.locator("#inspector-banner").waitFor({ state: "hidden" });
});

test("deletion and expiry by other clients are stated clearly", async () => {
  await client.update("gone/by-node", { x: 1 });
  await row("gone/by-node").waitFor();
  await select("gone/by-node");
  await client.delete("gone/by-node");
  await page.locator("#inspector-banner", { hasText: "was deleted" }).waitFor();
  assert.match(await page.locator("#inspector-value").getAttribute("class"), /gone/);

  await client.update("gone/ttl", { short: true }, { ttlMs: 1500 });
  await row("gone/ttl").waitFor();
  await select("gone/ttl");
  await page.locator("#meta-expiry", { hasText: /^in / }).waitFor();
  await page.locator("#inspector-banner", { hasText: "expired" }).waitFor({ timeout: 10_000 });
  await page.locator("#inspector-state", { hasText: "expired" }).waitFor();
  await page.locator(`#event-log li[data-event="expire"][data-key="gone/ttl"]`).waitFor();
});

test("the event log can be paused and resumed", async () => {
  const pause = page.locator("#events-pause");
  // Everything written so far has reached the log once this marker has.
  await client.update("paused/marker", true);
  await waitFor(async () => (await page.locator("#event-log li").first().getAttribute("data-key")) === "paused/marker", { message: "the marker first in the log" });
  await page.keyboard.press("Escape");
  await page.locator("body").press("p");
  assert.equal(await pause.getAttribute("aria-pressed"), "true");
  await client.update("paused/one", 1);
  await client.update("paused/two", 2);
  await page.locator("#events-info", { hasText: "paused · 2 new" }).waitFor();
  assert.equal(await page.locator(`#event-log li[data-key="paused/one"]`).count(), 0);
  await pause.click();
  assert.equal(await pause.getAttribute("aria-pressed"), "false");
  await page.locator(`#event-log li[data-key="paused/two"]`).waitFor();
  // Newest first.
  assert.equal(await page.locator("#event-log li").first().getAttribute("data-key"), "paused/two");

  // Clicking a key in the log inspects it.
  await page.locator(`#event-log li[data-key="paused/one"] .key-link`).click();
  await page.locator("#inspector-title", { hasText: "paused/one" }).waitFor();
});

test("the stats panel refreshes every second", async () => {
  const stats = await client.stats();
  await page.locator("#stat-keys", { hasText: String(stats.keys) }).waitFor();
  await page.locator("#stat-ops", { hasText: /\d/ }).waitFor();
  await page.locator("#stat-writes", { hasText: /\d/ }).waitFor();
  const before = Number((await page.locator("#stat-rev").textContent()).replace(/,/g, ""));
  await client.incr("counter");
  await waitFor(async () => Number((await page.locator("#stat-rev").textContent()).replace(/,/g, "")) > before, { message: "stats to refresh" });
  assert.ok(Number(await page.locator("#stat-connections").textContent()) >= 2);
  // Selecting many keys in turn left one key subscription, plus the log's prefix one.
  await waitFor(async () => (await client.stats()).subscriptions === 2, { message: "2 subscriptions on the hub" });
});

test("a key written thousands of times converges to its last value", async () => {
  await client.update("hot/key", { n: -1 });
  await row("hot/key").waitFor();
  await select("hot/key");
  const writes = [];
  for (let n = 0; n < 3000; n++) writes.push(client.update("hot/key", { n, pad: "x".repeat(200) }));
  const last = (await Promise.all(writes)).at(-1);
  await page.locator("#inspector-value", { hasText: '"n": 2999' }).waitFor({ timeout: 15_000 });
  await page.locator("#meta-rev", { hasText: new RegExp(`^${last.rev}$`) }).waitFor();
  await page.locator("#meta-size", { hasText: "219 B" }).waitFor();
  await page.locator("#inspector-state", { hasText: "live" }).waitFor();
});

test("layouts: 1280×800, narrow (panels stack) and dark; screenshots in target/dashboard/", async () => {
  await client.update("app/profile", {
    name: "Ada",
    roles: ["admin", "ops"],
    limits: { requests: 1000, burst: 50.5 },
    active: true,
    manager: null,
  }, { ttlMs: 3_600_000 });
  await row("app/profile").waitFor();
  await select("app/profile");
  await page.locator("#meta-expiry", { hasText: /^in / }).waitFor();
  await screenshot(page, "dashboard-1280x800.png");

  await page.locator("#edit-key").click();
  await page.locator("#editor-value").fill('{"name": "Ada",');
  await page.locator("#editor-error").waitFor();
  await screenshot(page, "dashboard-editor.png");
  await page.locator("#editor-cancel").click();

  for (const [name, options] of [
    ["dashboard-narrow.png", { viewport: { width: 400, height: 800 } }],
    ["dashboard-dark.png", { colorScheme: "dark" }],
    ["dashboard-1000x700.png", { viewport: { width: 1000, height: 700 } }],
  ]) {
    const p = await openPage(browser, options);
    pages.push(p);
    await p.goto(`${hub.httpUrl}#key=${encodeURIComponent("app/profile")}`);
    await p.locator("body[data-ready=true]").waitFor();
    await p.locator("#inspector-value", { hasText: '"admin"' }).waitFor();
    await p.locator("#stat-ops", { hasText: /\d/ }).waitFor();
    // A few live events for the log.
    for (const k of ["jobs/42", "jobs/43"]) await client.update(k, { state: "running", worker: "w-1" });
    await client.merge("jobs/42", { state: "done" });
    await client.delete("jobs/43");
    await p.locator('#event-log li[data-event="delete"][data-key="jobs/43"]').waitFor();
    if (name === "dashboard-narrow.png") {
      const boxes = {};
      for (const id of ["stats-panel", "keys-panel", "inspector", "events-panel"]) boxes[id] = await p.locator(`#${id}`).boundingBox();
      // Stacked: one column, in order, nothing wider than the window.
      assert.ok(boxes["keys-panel"].y > boxes["stats-panel"].y);
      assert.ok(boxes.inspector.y >= boxes["keys-panel"].y + boxes["keys-panel"].height);
      assert.ok(boxes["events-panel"].y >= boxes.inspector.y + boxes.inspector.height);
      for (const b of Object.values(boxes)) assert.ok(b.x + b.width <= 400, "panel fits the window");
      assert.equal(await p.evaluate(() => document.documentElement.scrollWidth <= 400), true, "no horizontal scroll");
      await screenshot(p, name, { fullPage: true });
    } else {
      await screenshot(p, name);
    }
  }
});

test("no console errors or page errors", () => {
  for (const p of pages) assert.deepEqual(p.problems, []);
});
