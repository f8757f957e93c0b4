// tools on chatStream: the fake OpenAI upstream `tools` calls get_weather when offered it.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChatChunk } from "../src/index.js";
import { client, collect } from "./helpers.js";

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("tools", () => {
  test("a model that calls a tool: whole calls on chunks, then finishDetail tool_calls", async () => {
    const sluice = client();
    try {
      const events = await collect(sluice.chatStream("tools", "Weather in Paris?", { tools: [WEATHER], toolChoice: "auto" }));
      const chunks = events.filter((e) => e instanceof ChatChunk);
      const calls = chunks.flatMap((c) => c.toolCalls);
      assert.equal(calls.length, 1, JSON.stringify(chunks.map((c) => c.frame)));
      assert.equal(calls[0].id, "call_weather");
      assert.equal(calls[0].function.name, "get_weather");
      assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: "Paris" });
      const last = chunks.at(-1);
      assert.equal(last?.finishReason, "other");
      assert.equal(last?.finishDetail, "tool_calls");
    } finally {
      sluice.close();
    }
  });

  test("the tool's result gets the text answer; without tools there is no call", async () => {
    const sluice = client();
    try {
      const history = [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "call_weather", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }],
        },
      ];
      const answer = await collect(
        sluice.chatStream("tools", { role: "tool", tool_call_id: "call_weather", content: "sunny, 21 C" }, { messageHistory: history, tools: [WEATHER] }),
      );
      const chunks = answer.filter((e) => e instanceof ChatChunk);
      assert.equal(chunks.map((c) => c.content).join(""), "Sunny in Paris.");
      assert.ok(chunks.every((c) => c.toolCalls.length === 0));
      assert.equal(chunks.at(-1)?.finishReason, "complete");
      assert.equal(chunks.at(-1)?.finishDetail, null);
      const plain = await sluice.chatText("tools", "Weather in Paris?", { tools: [WEATHER], toolChoice: "none" });
      assert.equal(plain, "Sunny in Paris.");
    } finally {
      sluice.close();
    }
  });
});
