// A hub with tokens: the dashboard asks for one, keeps it for the session,
// and hides every edit control from a read-only token.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHub, nodeClient, launchBrowser, openPage, screenshot } from "./hub.js";

const WRITE = "w-secret-token";
const READ = "r-secret-token";
// The browser itself logs each refused upgrade; the dashboard cannot stop it.
const refusedUpgrade = /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws(\?token=[^']*)?' failed: (HTTP Authentication failed; no valid credentials available|Error during WebSocket handshake: Unexpected response code: 401)$/;

let hub;
let client;
let browser;
const pages = [];

before(async () => {
  hub = await startHub(["--token", WRITE, "--read-token", READ]);
  client = await nodeClient(hub.wsUrl, { token: WRITE });
  await client.update("shared/doc", { hello: "world" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await client?.close();
  await hub?.stop();
});

async function signIn(page, token) {
  await page.locator("#token-dialog[open]").waitFor();
  await page.locator("#token-input").fill(token);
  await page.locator("#token-input").press("Enter");
}

test("the page asks for a token, says when one is wrong, and keeps a good one for the session", async () => {
  const page = await openPage(browser, { allow: [refusedUpgrade] });
  pages.push(page);
  await page.goto(hub.httpUrl);
  await page.locator("#token-dialog[open]").waitFor();
  await page.locator("#conn-status[data-state=auth]").waitFor();
  assert.equal(await page.locator("#token-error").isVisible(), false);

  await signIn(page, "not-a-token");
  await page.locator("#token-error").waitFor();
  await screenshot(page, "dashboard-token.png");
  assert.equal(await page.locator("#token-dialog").getAttribute("open"), "");

  await signIn(page, WRITE);
  await page.locator("body[data-ready=true]").waitFor();
  assert.equal(await page.locator("body").getAttribute("data-role"), "write");
  await page.locator("#conn-status[data-state=connected]").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("memhub.dashboard.token")), WRITE);
  assert.equal(await page.locator("#new-key").isVisible(), true);
  assert.equal(await page.locator("#role-badge").isVisible(), false);
  await page.locator('.key-row[data-key="shared/doc"]').click();
  await page.locator("#inspector-value", { hasText: "world" }).waitFor();
  assert.equal(await page.locator("#edit-key").isVisible(), true);
  assert.equal(await page.locator("#delete-key").isVisible(), true);

  // A reload in the same tab connects with the stored token, no prompt.
  const refusalsBefore = page.problems.length;
  await page.reload();
  await page.locator("body[data-ready=true]").waitFor();
  assert.equal(await page.locator("#token-dialog").getAttribute("open"), null);
  assert.equal(page.problems.length, refusalsBefore);

  // "Forget token" clears it and asks again.
  await page.locator("#forget-token").click();
  await page.locator("#token-dialog[open]").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("memhub.dashboard.token")), null);
});

test("a read-only token sees keys and live values but no edit controls", async () => {
  const page = await openPage(browser, { allow: [refusedUpgrade] });
  pages.push(page);
  await page.goto(hub.httpUrl);
  await signIn(page, READ);
  await page.locator("body[data-ready=true]").waitFor();
  assert.equal(await page.locator("body").getAttribute("data-role"), "read");
  await page.locator("#role-badge").waitFor();
  assert.equal(await page.locator("#new-key").isVisible(), false);

  await page.locator('.key-row[data-key="shared/doc"]').click();
  await page.locator("#inspector-value", { hasText: "world" }).waitFor();
  assert.equal(await page.locator("#edit-key").isVisible(), false);
  assert.equal(await page.locator("#delete-key").isVisible(), false);
  assert.equal(await page.locator("#copy-value").isVisible(), true);
  await screenshot(page, "dashboard-read-only.png");

  // Shortcuts for editing do nothing either.
  await page.locator("#inspector-value").focus();
  for (const key of ["n", "e", "Delete"]) await page.keyboard.press(key);
  assert.equal(await page.locator("dialog[open]").count(), 0);
  assert.equal(await page.locator("#editor").isVisible(), false);

  // Still live.
  await client.update("shared/doc", { hello: "again" });
  await page.locator("#inspector-value", { hasText: "again" }).waitFor();
  await page.locator('#event-log li[data-key="shared/doc"]').waitFor();
  // The role probe changed nothing.
  assert.deepEqual(await client.get("shared/doc"), { hello: "again" });
  assert.equal((await client.stats()).locks_held, 0);
});

test("no console errors or page errors (besides the browser's own log of each refused upgrade)", () => {
  for (const p of pages) assert.deepEqual(p.problems, []);
});
