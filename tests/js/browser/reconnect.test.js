// The connection indicator and recovery: the hub goes away and comes back
// (a new process on the same port, so revs restart); the dashboard shows
// "reconnecting", then resumes its subscriptions and re-lists.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHub, nodeClient, launchBrowser, openPage } from "./hub.js";

// While the hub is down the browser logs each failed attempt itself.
const hubDown = [
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed: .*ERR_CONNECTION_REFUSED/,
  /^Failed to load resource: net::ERR_CONNECTION_REFUSED$/,
];

let hub;
let browser;
let page;

before(async () => {
  hub = await startHub();
  browser = await launchBrowser();
  page = await openPage(browser, { allow: hubDown });
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

test("the status shows reconnecting while the hub is gone, and the page recovers when it returns", async () => {
  const first = await nodeClient(hub.wsUrl);
  await first.update("life/a", { generation: 1 });
  await first.update("life/b", true);
  await first.close();

  await page.goto(`${hub.httpUrl}#key=life%2Fa`);
  await page.locator("body[data-ready=true]").waitFor();
  await page.locator("#inspector-value", { hasText: '"generation": 1' }).waitFor();
  await page.locator('#key-list .key-row[data-key="life/b"]').waitFor();
  await page.locator("#conn-status[data-state=connected]").waitFor();
  assert.equal(await page.locator("#conn-label").textContent(), "Connected");

  const port = hub.port;
  await hub.stop();
  await page.locator("#conn-status[data-state=reconnecting]").waitFor();
  assert.equal(await page.locator("#conn-label").textContent(), "Reconnecting…");

  hub = await startHub([], { port });
  const second = await nodeClient(hub.wsUrl);
  await second.update("life/a", { generation: 2 });
  await second.update("life/c", "new");
  await second.close();

  await page.locator("#conn-status[data-state=connected]").waitFor({ timeout: 15_000 });
  // The key subscription resumed (revs restarted: the value still wins).
  await page.locator("#inspector-value", { hasText: '"generation": 2' }).waitFor();
  await page.locator("#inspector-state", { hasText: "live" }).waitFor();
  // The list was re-read: life/b is gone with the old hub, life/c is new.
  await page.locator('#key-list .key-row[data-key="life/c"]').waitFor();
  await page.locator('#key-list .key-row[data-key="life/b"]').waitFor({ state: "detached" });
  await page.locator("#stat-keys", { hasText: /^2$/ }).waitFor();
});

test("no console errors or page errors (besides the browser's own log of failed attempts)", () => {
  assert.deepEqual(page.problems, []);
});
