// 100,000 keys: the dashboard lists one page at a time and stays responsive.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHub, nodeClient, bulkWrite, launchBrowser, openPage, screenshot, waitFor } from "./hub.js";

const COUNT = 100_000;
let hub;
let client;
let browser;
let page;

const firstKey = () => page.locator("#key-list .key-row").first().getAttribute("data-key");

before(async () => {
  hub = await startHub();
  await bulkWrite(hub.wsUrl, COUNT, "bulk/");
  client = await nodeClient(hub.wsUrl);
  for (const k of ["other/a", "other/b", "other/c"]) await client.update(k, k);
  browser = await launchBrowser();
  page = await openPage(browser);
});

after(async () => {
  await browser?.close();
  await client?.close();
  await hub?.stop();
});

test("with 100,000 keys the first page renders quickly and paging works", async () => {
  assert.equal((await client.stats()).keys, COUNT + 3);
  const started = Date.now();
  await page.goto(hub.httpUrl);
  await page.locator('#key-list .key-row[data-key="bulk/00099"]').waitFor();
  const firstPageMs = Date.now() - started;
  assert.ok(firstPageMs < 5000, `first page took ${firstPageMs} ms`);
  assert.equal(await page.locator("#key-list .key-row").count(), 100);
  assert.equal(await firstKey(), "bulk/00000");
  await page.locator("#key-count", { hasText: "100,003 total" }).waitFor();
  assert.equal(await page.locator("#prev-page").isDisabled(), true);

  await page.locator("#next-page").click();
  await page.locator('#key-list .key-row[data-key="bulk/00100"]').waitFor();
  assert.equal(await firstKey(), "bulk/00100");
  assert.equal(await page.locator("#page-info").textContent(), "Page 2 · 101–200");

  // "]" and "[" page too.
  await page.locator("body").press("]");
  await page.locator('#key-list .key-row[data-key="bulk/00200"]').waitFor();
  await page.locator("body").press("[");
  await page.locator('#key-list .key-row[data-key="bulk/00100"]').waitFor();
  await page.locator("#prev-page").click();
  await page.locator('#key-list .key-row[data-key="bulk/00000"]').waitFor();

  // Arrow keys move between rows; Enter inspects.
  await page.locator('#key-list .key-row[data-key="bulk/00000"]').focus();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Enter");
  await page.locator("#inspector-title", { hasText: "bulk/00002" }).waitFor();
  await page.locator("#inspector-value", { hasText: '"n": 2' }).waitFor();
  // The list is one Tab stop: Tab leaves it (for the pager), Shift+Tab comes
  // back to the selected row.
  await page.locator('#key-list .key-row[data-key="bulk/00002"]').focus();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "next-page");
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.key), "bulk/00002");
});

test("the prefix filter counts what it has loaded", async () => {
  await page.locator("body").press("/");
  assert.equal(await page.evaluate(() => document.activeElement.id), "prefix-filter");
  await page.keyboard.type("bulk/0999");
  await page.locator('#key-list .key-row[data-key="bulk/09990"]').waitFor();
  await page.locator("#key-count", { hasText: "10 matching" }).waitFor();
  assert.equal(await page.locator("#key-list .key-row").count(), 10);
  assert.equal(await page.locator("#next-page").isDisabled(), true);

  await page.locator("#prefix-filter").fill("bulk/");
  await page.locator("#key-count", { hasText: "100+ matching" }).waitFor();
  await page.locator("#next-page").click();
  await page.locator("#key-count", { hasText: "200+ matching" }).waitFor();

  await page.locator("#prefix-filter").fill("other/");
  await page.locator("#key-count", { hasText: "3 matching" }).waitFor();
  await page.locator("#prefix-filter").fill("nothing/");
  await page.locator("#key-list-empty", { hasText: "No keys start with" }).waitFor();
  await page.locator("#prefix-filter").fill("");
  await page.locator('#key-list .key-row[data-key="bulk/00000"]').waitFor();
});

test("a burst of writes keeps the event log capped and the page responsive", async () => {
  await bulkWrite(hub.wsUrl, 5000, "late/");
  // The hub may drop events for the page's busy subscription (it then sends
  // "lagged"), so wait for a marker written after the burst rather than for
  // all 5,000; re-write it until one lands in the log.
  let n = 0;
  await waitFor(async () => {
    n += 1;
    await client.update("late/marker", n);
    return page.evaluate((v) => {
      const first = document.querySelector("#event-log li");
      return first?.dataset.key === "late/marker" && first.textContent.endsWith(String(v));
    }, n);
  }, { interval: 200, timeout: 20_000, message: "the marker after the burst in the log" });
  assert.equal(await page.locator("#event-log li").count(), 200);
  const seen = Number((await page.locator("#events-info").textContent()).replace(/[^\d]/g, ""));
  assert.ok(seen >= 1000, `the log saw ${seen} events`);
  // Still answering clicks.
  await page.locator("#events-pause").click();
  assert.equal(await page.locator("#events-pause").getAttribute("aria-pressed"), "true");
  await screenshot(page, "dashboard-100k.png");
});

test("no console errors or page errors", () => {
  assert.deepEqual(page.problems, []);
});
