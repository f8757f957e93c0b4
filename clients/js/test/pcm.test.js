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

test("48 kHz to 16 kHz keeps a third of the samples (less the filter's lag), across any block sizes", () => {
  const converter = new RateConverter(48000, 16000);
  const out = convert(48000, 16000, 48000, () => 0.25);
  assert.ok(16000 - out.length <= converter.delay / 3 + 1, String(out.length));
  // after the first outputs, whose filter still reads the silence before the stream
  assert.ok(out.slice(converter.delay).every((s) => Math.abs(s - 0.25) < 1e-6));
});

/** The RMS of a tone of `hz` after converting 1 s of it from `from` to `to`. */
function toneLevel(from, to, hz) {
  const out = convert(from, to, from, (i) => Math.sin((2 * Math.PI * hz * i) / from));
  const steady = out.slice(200, -200);
  return Math.sqrt(steady.reduce((a, s) => a + s * s, 0) / steady.length);
}

test("downsampling keeps speech frequencies and removes what would fold back", () => {
  assert.ok(Math.abs(toneLevel(48000, 16000, 1000) - Math.SQRT1_2) < 0.02); // passband
  assert.ok(toneLevel(48000, 16000, 12000) < 0.01); // above 8 kHz: would alias to 4 kHz
  assert.ok(toneLevel(44100, 16000, 10000) < 0.01);
});

test("44.1 kHz to 16 kHz keeps the tone and the length", () => {
  const tone = (i) => Math.sin((2 * Math.PI * 440 * i) / 44100);
  const out = convert(44100, 16000, 44100, tone);
  assert.ok(Math.abs(out.length - 16000) <= 10, String(out.length));
  // zero crossings of 1 s of 440 Hz: about 880, whatever the rate
  let crossings = 0;
  for (let i = 1; i < out.length; i++) if (out[i - 1] < 0 !== out[i] < 0) crossings += 1;
  assert.ok(Math.abs(crossings - 880) <= 3, String(crossings));
});

test("8 kHz to 16 kHz interpolates between samples", () => {
  const out = convert(8000, 16000, 8000, (i) => Math.sin((2 * Math.PI * 300 * i) / 8000));
  assert.ok(Math.abs(out.length - 16000) <= 20, String(out.length));
  for (let k = 100; k < out.length - 100; k++) {
    const expected = Math.sin((2 * Math.PI * 300 * k) / 16000); // output k sits at input k / 2
    assert.ok(Math.abs(out[k] - expected) < 0.01, `at ${k}: ${out[k]} vs ${expected}`);
  }
});

test("float to PCM16 clips and maps the range; PCM16 bytes back to floats", () => {
  const pcm = floatToPcm16(Float32Array.from([0, 1, -1, 2, -2, 0.5]));
  assert.deepEqual([...pcm], [0, 32767, -32768, 32767, -32768, 16383]);
  const floats = pcm16ToFloat(new Uint8Array(pcm.buffer));
  assert.deepEqual([...floats].map((f) => Math.round(f * 1000) / 1000), [0, 1, -1, 1, -1, 0.5]);
});
