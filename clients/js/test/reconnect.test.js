// Dropped sockets, through a TCP proxy that cuts them (tests/js_proxy.py): a request
// that had received nothing is resent on a new socket; one cut mid-stream is resumed
// there after the last `seq` it saw (Sluice keeps its frames; docs/resume.md).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChatChunk, RouterNotFound } from "../src/index.js";
import { client, collect, env, proxy } from "./helpers.js";

describe("reconnect", () => {
  test("a request cut before any answer is resent on a new socket and completes", async () => {
    const sluice = client(env.proxyUrl);
    try {
      assert.equal(await sluice.chatText("plain", "warm up"), "Backup answer");
      await proxy("cut-on-send");
      assert.equal(await sluice.chatText("plain", "cut on the way"), "Backup answer");
      assert.equal(sluice.stats.connects, 2);
      assert.equal(sluice.stats.resent, 1);
      assert.equal(sluice.stats.lost, 0);
    } finally {
      sluice.close();
    }
  });

  test("a stream cut mid-answer resumes on a new socket: every chunk once, in order", async () => {
    const sluice = client(env.proxyUrl);
    try {
      const seen = [];
      for await (const event of sluice.chatStream("slow", "long")) {
        seen.push(event);
        if (seen.length === 3) await proxy("cut");
      }
      assert.ok(seen.every((e) => e instanceof ChatChunk));
      assert.deepEqual(seen.map((e) => e.seq), seen.map((_, i) => i + 1));
      assert.equal(seen.at(-1).finishReason, "complete");
      assert.equal(seen.map((e) => e.content).join("").split(" ").length, 41); // 40 words and ""
      assert.equal(sluice.stats.connects, 2);
      assert.equal(sluice.stats.resumed, 1);
      assert.equal(sluice.stats.lost, 0);
    } finally {
      sluice.close();
    }
  });

  test("a socket gone silent (half-open) is cut by the heartbeat; the stream resumes on a new one", async () => {
    const sluice = client(env.proxyUrl, { heartbeat: 200 });
    try {
      const seen = [];
      for await (const event of sluice.chatStream("slow", "long")) {
        seen.push(event);
        if (seen.length === 2) await proxy("freeze");
      }
      assert.deepEqual(seen.map((e) => e.seq), seen.map((_, i) => i + 1));
      assert.equal(seen.at(-1).finishReason, "complete");
      assert.equal(sluice.stats.resumed, 1);
      assert.equal(await sluice.chatText("plain", "hello again"), "Backup answer");
      assert.ok(sluice.stats.connects >= 2, String(sluice.stats.connects));
    } finally {
      sluice.close();
    }
  });

  test("a refused upgrade (404) fails the request at once with RouterNotFound", async () => {
    const sluice = client(env.url);
    try {
      await assert.rejects(collect(sluice.speak("no-such-router", "hi")), RouterNotFound);
    } finally {
      sluice.close();
    }
  });
});
