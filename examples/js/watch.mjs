#!/usr/bin/env node
// Watch a key (or, with --prefix, every key under a prefix) with the
// JavaScript client, printing its state and then every change, one JSON
// line each, until Ctrl-C. If the hub restarts, the client reconnects and
// prints one synthesized event for what changed meanwhile.
//
//     cd examples/js && npm install ws     # Node < 22 has no global WebSocket
//     node watch.mjs counter               # or: node watch.mjs --prefix room/
//     node watch.mjs --demo                # also writes 3 updates, then exits
//
// MEMHUB_URL (default ws://127.0.0.1:18813/ws) and MEMHUB_TOKEN are read
// from the environment.

import { connect } from "../../web/memhub.js";

async function webSocketClass() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  try {
    return (await import("ws")).default;
  } catch {
    console.error("watch.mjs: this Node.js has no global WebSocket; run `npm install ws` in examples/js (or use Node 22+)");
    process.exit(1);
  }
}

const args = process.argv.slice(2);
const demo = args.includes("--demo");
const prefixAt = args.indexOf("--prefix");
const prefix = prefixAt >= 0 ? (args[prefixAt + 1] ?? "") : undefined;
const key = args.find((a, i) => !a.startsWith("--") && i !== prefixAt + 1) ?? (demo ? `watch-demo/${Date.now()}` : "counter");
const url = process.env.MEMHUB_URL || "ws://127.0.0.1:18813/ws";

const options = {
  WebSocket: await webSocketClass(),
  token: process.env.MEMHUB_TOKEN || undefined,
  connectRetry: 0, // no hub: say so at once
  maxRetry: demo ? 0 : Infinity, // then ride out hub restarts
  retryDelayMs: 1000,
  onReconnect: () => console.error("reconnected"),
};

let hub;
try {
  hub = await connect(url, options);
} catch (e) {
  console.error(`watch.mjs: ${e.message}\nStart a hub first: cargo run --release -- serve`);
  process.exit(1);
}
process.on("SIGINT", () => hub.close().then(() => process.exit(0)));

const sub = prefix !== undefined ? await hub.subscribePrefix(prefix) : await hub.subscribe(key);
console.log(JSON.stringify(prefix !== undefined ? { prefix } : { key, ...sub.snapshot }));

if (demo) {
  const writer = await connect(url, { ...options, onReconnect: undefined });
  for (let i = 1; i <= 3; i++) await writer.update(key, { n: i });
  await writer.close();
}

let seen = 0;
for await (const ev of sub) {
  console.log(JSON.stringify(ev));
  if (demo && ++seen === 3) break;
}
await hub.close();
