// speak and listen against Sluice's local engines: a speak round trip, and a listen
// round trip fed from a WAV of known speech.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Done, SpeakSegment, SpeechStarted, Transcript, audioFormat } from "../src/index.js";
import { client, env, readWav } from "./helpers.js";

describe("speak and listen", () => {
  test("speak streams audio and segments for streamed text, then Done", async () => {
    const sluice = client();
    try {
      async function* pieces() {
        yield "Hello there. ";
        yield "This is a ";
        yield "streamed sentence.";
      }
      let bytes = 0;
      const events = [];
      const format = audioFormat("pcm_s16le", 16000);
      for await (const item of sluice.speak("voice", pieces(), { format, metadata: { k: 1 } })) {
        if (item instanceof Uint8Array) bytes += item.length;
        else events.push(item);
      }
      assert.ok(bytes > 16000, `only ${bytes} bytes of audio`); // more than half a second
      assert.ok(events.slice(0, -1).every((e) => e instanceof SpeakSegment));
      assert.ok(events.length >= 2);
      const done = events.at(-1);
      assert.ok(done instanceof Done);
      assert.equal(done.finishReason, "complete");
      assert.deepEqual(done.metadata, { k: 1 });
      assert.equal(bytes % 2, 0);
      const whole = await sluice.speakBytes("voice", "Good morning.", { format });
      assert.ok(whole.length > 8000);
      assert.equal(sluice.stats.connects, 1);
    } finally {
      sluice.close();
    }
  });

  test("listen transcribes a WAV of known speech sent as it would stream from a microphone", async () => {
    const sluice = client();
    try {
      const { sampleRate, pcm } = await readWav(/** @type {string} */ (env.wav));
      async function* microphone() {
        for (let at = 0; at < pcm.length; at += 640) yield pcm.subarray(at, at + 640); // 20 ms frames
      }
      const events = [];
      const format = audioFormat("pcm_s16le", sampleRate);
      for await (const event of sluice.listen("voice", microphone(), { format, interimResults: true })) {
        events.push(event);
      }
      assert.ok(events[0] instanceof SpeechStarted, events.map((e) => e.type).join());
      assert.ok(events.at(-1) instanceof Done);
      const finals = events.filter((e) => e instanceof Transcript && e.isFinal);
      assert.ok(finals.length > 0);
      assert.ok(finals.every((t) => t.providerId));
      assert.ok(finals.map((t) => t.text).join(" ").includes(env.sentence), finals.map((t) => t.text).join("|"));

      const again = await sluice.listenBytes("voice", pcm, { format });
      assert.ok(again.map((t) => t.text).join(" ").includes(env.sentence));
    } finally {
      sluice.close();
    }
  });
});
