// Shared by the node tests: the URLs pytest gives (tests/test_js_client.py), the `ws`
// WebSocket for Node 20, a WAV reader and the cutting proxy's control.
import { readFile } from "node:fs/promises";
import { WebSocket } from "ws";

import { SluiceClient } from "../src/index.js";

export const env = {
  url: process.env.SLUICE_URL,
  proxyUrl: process.env.SLUICE_PROXY_URL,
  proxyControl: process.env.SLUICE_PROXY_CONTROL,
  wav: process.env.SLUICE_WAV,
  sentence: process.env.SLUICE_SENTENCE,
};

/** Fast reconnects for tests. */
export const FAST = { WebSocket, backoff: { initial: 0.02, maximum: 0.2 }, pendingTimeout: 10_000 };

/** A client of `url` (the server itself unless a proxy URL is given) with test options. */
export function client(url = env.url, options = {}) {
  if (!url) throw new Error("SLUICE_URL is not set: these tests run through tests/test_js_client.py");
  return new SluiceClient(/** @type {string} */ (url), { ...FAST, ...options });
}

/** Tell the proxy to cut its connections now, or on the next client send. */
export async function proxy(action) {
  const response = await fetch(`${env.proxyControl}/${action}`, { method: "POST" });
  if (!response.ok) throw new Error(`proxy control ${action}: HTTP ${response.status}`);
  return response.json();
}

/** A mono PCM16 WAV file -> { sampleRate, pcm } (the data chunk's bytes). */
export async function readWav(path) {
  const bytes = await readFile(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.toString("ascii", 0, 4) !== "RIFF" || bytes.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error(`${path} is not a WAV file`);
  }
  let sampleRate = 0;
  for (let at = 12; at + 8 <= bytes.length; ) {
    const id = bytes.toString("ascii", at, at + 4);
    const size = view.getUint32(at + 4, true);
    if (id === "fmt ") sampleRate = view.getUint32(at + 12, true);
    if (id === "data") return { sampleRate, pcm: new Uint8Array(bytes.buffer, bytes.byteOffset + at + 8, size) };
    at += 8 + size + (size % 2);
  }
  throw new Error(`${path} has no data chunk`);
}

/** Everything an async iterable yields, as an array. */
export async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}
