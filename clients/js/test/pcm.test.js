// The PCM conversions the microphone worklet and the player run on (pure functions,
// so they are checked here in Node; the browser path is the playground's Chromium test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { RateConverter, floatToPcm16, pcm16ToFloat } from "../src/audio/pcm.js";

/** Feed `total` samples of `signal` through a converter in uneven blocks. */
function convert(from, to, total, signal) {
  const converter = new RateConverter(from, to);
  const out = [];
  const sizes = [128, 37, 500, 1, 128, 4096];
  for (let at = 0, k = 0; at < total; k++) {
    const size = Math.min(sizes[k % sizes.length], total - at);
    const block = Float32Array.from({ length: size }, (_, i) => signal(at + i));
    out.push(...converter.push(block));
    at += size;
  }
  return out;
}

test("48 kHz to 16 kHz keeps a third of the samples, across any block sizes", () => {
  const out = convert(48000, 16000, 48000, () => 0.25);
  assert.equal(out.length, 16000);
  assert.ok(out.every((s) => Math.abs(s - 0.25) < 1e-6));
});

test("44.1 kHz to 16 kHz keeps the tone and the length", () => {
  const tone = (i) => Math.sin((2 * Math.PI * 440 * i) / 44100);
  const out = convert(44100, 16000, 44100, tone);
  assert.ok(Math.abs(out.length - 16000) <= 1, String(out.length));
  // zero crossings of 1 s of 440 Hz: about 880, whatever the rate
  let crossings = 0;
  for (let i = 1; i < out.length; i++) if (out[i - 1] < 0 !== out[i] < 0) crossings += 1;
  assert.ok(Math.abs(crossings - 880) <= 2, String(crossings));
});

test("8 kHz to 16 kHz interpolates between samples", () => {
  const out = convert(8000, 16000, 8000, (i) => i / 8000);
  assert.ok(Math.abs(out.length - 16000) <= 2, String(out.length));
  for (let i = 1; i < out.length; i++) assert.ok(Math.abs(out[i] - out[i - 1] - 1 / 16000) < 1e-5, `at ${i}`);
});

test("float to PCM16 clips and maps the range; PCM16 bytes back to floats", () => {
  const pcm = floatToPcm16(Float32Array.from([0, 1, -1, 2, -2, 0.5]));
  assert.deepEqual([...pcm], [0, 32767, -32768, 32767, -32768, 16383]);
  const floats = pcm16ToFloat(new Uint8Array(pcm.buffer));
  assert.deepEqual([...floats].map((f) => Math.round(f * 1000) / 1000), [0, 1, -1, 1, -1, 0.5]);
});
