// chatStream against a real Sluice: multiplexing, failover with a reset, typed errors,
// cancel by AbortSignal and by leaving the loop.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChatChunk, ModelReset, RouterNotFound, BadRequest } from "../src/index.js";
import { client, collect } from "./helpers.js";

describe("chatStream", () => {
  test("many streams share one socket, each with its own metadata", async () => {
    const sluice = client();
    try {
      const runs = await Promise.all(
        Array.from({ length: 8 }, (_, n) => collect(sluice.chatStream("plain", "hi", { metadata: { n } }))),
      );
      assert.equal(sluice.stats.connects, 1);
      assert.equal(sluice.stats.completed, 8);
      runs.forEach((events, n) => {
        assert.ok(events.every((e) => e instanceof ChatChunk));
        assert.equal(events.map((e) => e.content).join(""), "Backup answer");
        assert.equal(events.at(-1).finishReason, "complete");
        assert.ok(events.slice(0, -1).every((e) => e.finishReason === null));
        assert.ok(events.every((e) => e.metadata.n === n));
      });
    } finally {
      sluice.close();
    }
  });

  test("a model failing mid-answer yields ModelReset, then the backup's answer", async () => {
    const sluice = client();
    try {
      const events = await collect(sluice.chatStream("failover", "hi"));
      const reset = events.findIndex((e) => e instanceof ModelReset);
      assert.ok(reset > 0, JSON.stringify(events.map((e) => e.type)));
      assert.equal(events.slice(0, reset).map((e) => e.content).join(""), "Hello from");
      assert.equal(events[reset].modelId, "a");
      const after = events.slice(reset + 1);
      assert.equal(after.map((e) => e.content).join(""), "Backup answer");
      assert.equal(after.at(-1).modelId, "b");
      assert.equal(after.at(-1).providerId, "openai");
      assert.equal(await sluice.chatText("failover", "again"), "Backup answer");
    } finally {
      sluice.close();
    }
  });

  test("terminal errors throw typed errors and the socket lives on", async () => {
    const sluice = client();
    try {
      await assert.rejects(collect(sluice.chatStream("plain", { role: "user" })), (error) => {
        assert.ok(error instanceof BadRequest, String(error));
        assert.equal(error.retryable, false);
        assert.ok(error.requestId);
        return true;
      });
      assert.equal(await sluice.chatText("plain", "still there?"), "Backup answer");
      assert.equal(sluice.stats.connects, 1);
      await assert.rejects(collect(sluice.chatStream("nowhere", "hi")), RouterNotFound);
    } finally {
      sluice.close();
    }
  });

  test("an AbortSignal cancels the request on the server; the socket serves the next", async () => {
    const sluice = client();
    try {
      const controller = new AbortController();
      const seen = [];
      await assert.rejects(
        (async () => {
          for await (const event of sluice.chatStream("slow", "long", { signal: controller.signal })) {
            seen.push(event);
            if (seen.length === 2) controller.abort(new Error("user stopped"));
          }
        })(),
        /user stopped/,
      );
      assert.equal(seen.length, 2);
      let early = 0;
      for await (const event of sluice.chatStream("slow", "long")) {
        early += event.content.length;
        break; // leaving the loop sends cancel too
      }
      assert.ok(early > 0);
      assert.equal(await sluice.chatText("plain", "after"), "Backup answer");
      assert.equal(sluice.stats.connects, 2); // one socket for slow, one for plain
      assert.equal(sluice.stats.lost, 0);
    } finally {
      sluice.close();
    }
  });

  test("an aborted signal refuses to start", async () => {
    const sluice = client();
    try {
      await assert.rejects(collect(sluice.chatStream("plain", "x", { signal: AbortSignal.abort() })), {
        name: "AbortError",
      });
      assert.equal(sluice.stats.connects, 0);
    } finally {
      sluice.close();
    }
  });
});
