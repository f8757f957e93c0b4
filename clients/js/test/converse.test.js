// converse against a real agent router: Sluice's local STT (listen), the fake OpenAI
// upstream `plain` (chat: "Backup answer") and local espeak (speak).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Cancelled,
  Done,
  ReplyText,
  RouterNotFound,
  SpeakSegment,
  SluiceError,
  SpeechStarted,
  Transcript,
  ToolCalls,
  TurnEnded,
  UserTurn,
  audioFormat,
} from "../src/index.js";
import { client, env, readWav } from "./helpers.js";

const REPLY = "Backup answer";

describe("converse", () => {
  test("a spoken turn is transcribed, answered in text and in audio, then Done after end", async () => {
    const sluice = client();
    try {
      const { sampleRate, pcm } = await readWav(/** @type {string} */ (env.wav));
      const talk = sluice.converse("assistant", {
        format: audioFormat("pcm_s16le", sampleRate),
        outputSampleRate: 16000,
        metadata: { user: "u1" },
      });
      for (let at = 0; at < pcm.length; at += 640) talk.sendAudio(pcm.subarray(at, at + 640)); // 20 ms frames
      let audio = 0;
      const events = [];
      for await (const item of talk) {
        if (item instanceof Uint8Array) {
          audio += item.length;
          continue;
        }
        events.push(item);
        if (item instanceof TurnEnded) talk.end();
      }
      const types = events.map((e) => e.type);
      assert.ok(events[0] instanceof SpeechStarted, types.join());
      const finals = events.filter((e) => e instanceof Transcript && e.isFinal);
      assert.ok(finals.map((t) => t.text).join(" ").includes(/** @type {string} */ (env.sentence)), types.join());
      const turn = events.find((e) => e instanceof UserTurn);
      assert.ok(turn instanceof UserTurn);
      assert.ok(turn.text.includes(/** @type {string} */ (env.sentence)));
      const deltas = events.filter((e) => e instanceof ReplyText);
      assert.equal(deltas.map((e) => e.delta).join(""), REPLY);
      assert.ok(deltas.every((e) => e.turnId === turn.turnId && e.modelId === "b"));
      const segments = events.filter((e) => e instanceof SpeakSegment);
      assert.ok(segments.length >= 1 && segments[0].turnId === turn.turnId && segments[0].startMs === 0);
      assert.ok(audio > 8000, `only ${audio} bytes of reply audio`); // a quarter second at 16 kHz
      assert.equal(audio % 2, 0);
      const ended = events.find((e) => e instanceof TurnEnded);
      assert.ok(ended instanceof TurnEnded);
      assert.equal(ended.reason, "complete");
      assert.equal(ended.replyText, REPLY);
      assert.equal(ended.error, null);
      const done = events.at(-1);
      assert.ok(done instanceof Done, types.join());
      assert.equal(done.finishReason, "complete");
      assert.equal(done.usage?.turns, 1);
      assert.ok(events.every((e) => JSON.stringify(e.metadata) === JSON.stringify({ user: "u1" })));
      assert.ok(talk.ended);
    } finally {
      sluice.close();
    }
  });

  test("typed turns and conversations share one socket; cancel ends one with Cancelled", async () => {
    const sluice = client();
    try {
      const first = sluice.converse("assistant", { requestId: "typed-1" });
      const second = sluice.converse("assistant", { requestId: "typed-2" });
      first.text("hello there");
      first.end();
      const events = [];
      for await (const item of first) if (!(item instanceof Uint8Array)) events.push(item);
      assert.equal(first.requestId, "typed-1");
      const turn = events.find((e) => e instanceof UserTurn);
      assert.ok(turn instanceof UserTurn && turn.text === "hello there");
      assert.equal(events.filter((e) => e instanceof ReplyText).map((e) => e.delta).join(""), REPLY);
      assert.ok(events.at(-1) instanceof Done);
      second.cancel();
      await assert.rejects(async () => {
        for await (const _ of second);
      }, Cancelled);
      assert.equal(sluice.stats.connects, 1);
    } finally {
      sluice.close();
    }
  });

  test("a bad converse message is a typed error for that conversation only", async () => {
    const sluice = client();
    try {
      const bad = sluice.converse("assistant", { format: audioFormat("nonsense", 16000) });
      await assert.rejects(async () => {
        for await (const _ of bad);
      }, (error) => error instanceof SluiceError && error.errorName === "unsupported_format" && !error.retryable);
      const unknown = sluice.converse("nobody");
      await assert.rejects(async () => {
        for await (const _ of unknown);
      }, RouterNotFound);
      const good = sluice.converse("assistant");
      good.text("still there?");
      good.end();
      let text = "";
      for await (const item of good) if (item instanceof ReplyText) text += item.delta;
      assert.equal(text, REPLY);
    } finally {
      sluice.close();
    }
  });

  test("tools: the reply's calls come whole, toolResult answers them and the reply to them follows", async () => {
    const sluice = client();
    try {
      const weather = {
        type: "function",
        function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
      };
      const talk = sluice.converse("helper", { tools: [weather], toolChoice: "auto" });
      talk.text("Weather in Paris?");
      /** @type {any[]} */
      const events = [];
      let ended = 0;
      for await (const item of talk) {
        if (item instanceof Uint8Array) continue;
        events.push(item);
        if (item instanceof ToolCalls) {
          talk.toolResult("call_unknown", "x"); // not a call of the last reply: a notice
          talk.toolResult(item.calls[0].id, '{"sky": "sunny"}');
        }
        if (item instanceof TurnEnded && ++ended === 2) talk.end();
      }
      const types = events.map((e) => e.type).join();
      const calls = events.filter((e) => e instanceof ToolCalls);
      assert.equal(calls.length, 1, types);
      assert.equal(calls[0].calls[0].id, "call_weather");
      assert.equal(calls[0].calls[0].function.name, "get_weather");
      assert.deepEqual(JSON.parse(calls[0].calls[0].function.arguments), { city: "Paris" });
      assert.equal(calls[0].modelId, "t");
      const notice = events.find((e) => e.type === "error");
      assert.equal(notice?.name, "unknown_tool_call", types);
      const turns = events.filter((e) => e instanceof TurnEnded);
      assert.equal(turns.length, 2, types);
      assert.equal(turns[1].turnId, turns[0].turnId); // the reply to the results is the same user turn
      assert.equal(turns[1].replyText, "Sunny in Paris.");
      assert.ok(events.at(-1) instanceof Done, types);
    } finally {
      sluice.close();
    }
  });
});
