// Dropped sockets, through a TCP proxy that cuts them (tests/js_proxy.py): a request
// that had received nothing is resent on a new socket; one cut mid-stream without
// `seq` from the server ends with ConnectionLost; the next request reconnects.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChatChunk, ConnectionLost, RouterNotFound } from "../src/index.js";
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

  test("a stream cut mid-answer ends with ConnectionLost; the next request reconnects", async () => {
    const sluice = client(env.proxyUrl);
    try {
      const seen = [];
      await assert.rejects(
        (async () => {
          for await (const event of sluice.chatStream("slow", "long")) {
            seen.push(event);
            if (seen.length === 3) await proxy("cut");
          }
        })(),
        (error) => {
          assert.ok(error instanceof ConnectionLost, String(error));
          assert.equal(error.retryable, true);
          assert.equal(error.closeCode, 1006);
          assert.match(error.message, /carry no seq/);
          return true;
        },
      );
      assert.ok(seen.length >= 3 && seen.every((e) => e instanceof ChatChunk));
      const events = await collect(sluice.chatStream("slow", "again"));
      assert.equal(events.at(-1).finishReason, "complete");
      assert.equal(events.map((e) => e.content).join("").split(" ").length, 41); // 40 words and ""
      assert.equal(sluice.stats.connects, 2);
      assert.equal(sluice.stats.lost, 1);
    } finally {
      sluice.close();
    }
  });

  test("a socket gone silent (half-open) is cut by the heartbeat; the next request reconnects", async () => {
    const sluice = client(env.proxyUrl, { heartbeat: 200 });
    try {
      const seen = [];
      await assert.rejects(
        (async () => {
          for await (const event of sluice.chatStream("slow", "long")) {
            seen.push(event);
            if (seen.length === 2) await proxy("freeze");
          }
        })(),
        (error) => {
          assert.ok(error instanceof ConnectionLost, String(error));
          assert.equal(error.closeCode, 1006);
          return true;
        },
      );
      assert.ok(seen.length >= 2 && !seen.some((e) => e.finishReason), String(seen.length)); // cut before the end
      assert.equal(await sluice.chatText("plain", "hello again"), "Backup answer");
      assert.equal(sluice.stats.connects, 2);
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
