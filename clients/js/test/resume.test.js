// Resume by `seq` (the protocol of the issue "Many instances, one memory": every server
// frame carries seq; a client that reconnects sends {"type": "resume", "request_id",
// "after_seq"}) against a small scripted server speaking it, which cuts at exact frames
// and answers request_not_found on cue. Resume against Sluice itself is in
// reconnect.test.js.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocketServer } from "ws";

import { ChatChunk, ConnectionLost, Done, encodeAudio, Transcript } from "../src/index.js";
import { collect, FAST } from "./helpers.js";
import { SluiceClient } from "../src/index.js";

const WORDS = ["one ", "two ", "three ", "four ", "five ", "six"];
const LISTEN_CUT = 16000; // bytes of listen audio after which the first socket is cut (500 ms)

function chunk(requestId, seq, content, last) {
  const body = { model_id: "m", provider_id: "p", model_response: { message: { role: "assistant", content } } };
  if (last) body.finish_reason = "complete";
  return JSON.stringify({ type: "chunk", request_id: requestId, seq, chunk: body });
}

/** A scripted endpoint: chat answers WORDS (cut after `cutAfter` frames on the first socket). */
function scriptedServer() {
  const seen = { messages: [], sockets: 0, audio: new Map(), listenCut: new Set() };
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  server.on("connection", (ws) => {
    seen.sockets += 1;
    const socket = seen.sockets;
    ws.on("message", (data, binary) => {
      if (binary) {
        // listen audio: 1 byte N, N bytes of request id, the audio; kept per socket
        const bytes = new Uint8Array(data);
        const id = new TextDecoder().decode(bytes.subarray(1, 1 + bytes[0]));
        const key = `${socket}:${id}`;
        const got = [...(seen.audio.get(key) ?? []), ...bytes.subarray(1 + bytes[0])];
        seen.audio.set(key, got);
        if (!seen.listenCut.has(id) && got.length >= LISTEN_CUT) {
          // a final transcript up to 100 ms, then the connection is cut
          seen.listenCut.add(id);
          const final = { type: "transcript", request_id: id, seq: 1, segment_id: 0, text: "hi", is_final: true, start_ms: 0, end_ms: 100 };
          ws.send(JSON.stringify(final));
          ws.terminate();
        }
        return;
      }
      const message = JSON.parse(String(data));
      seen.messages.push(message);
      const id = message.request_id;
      if (message.type === "chat") {
        const cut = id.startsWith("cut-") ? 3 : WORDS.length;
        for (let seq = 1; seq <= cut; seq++) ws.send(chunk(id, seq, WORDS[seq - 1], seq === WORDS.length));
        if (cut < WORDS.length) ws.terminate(); // no close frame: a cut connection
      } else if (message.type === "speak") {
        ws.send(JSON.stringify({ type: "segment", request_id: id, seq: 1, segment: { text: "hi" } }));
        ws.send(encodeAudio(id, new Uint8Array([1, 2]))); // seq 2
        ws.send(encodeAudio(id, new Uint8Array([3, 4]))); // seq 3
        ws.terminate();
      } else if (message.type === "end" && seen.listenCut.has(id)) {
        ws.send(JSON.stringify({ type: "done", request_id: id, seq: 2, finish_reason: "complete", usage: {} }));
      } else if (message.type === "resume" && id.includes("unknown")) {
        ws.send(JSON.stringify({ type: "error", request_id: id, seq: 1, error: { name: "request_not_found", message: "no such request", finish_reason: "error" } }));
      } else if (message.type === "resume" && id.startsWith("speak-")) {
        ws.send(encodeAudio(id, new Uint8Array([5, 6]))); // seq 4
        ws.send(JSON.stringify({ type: "done", request_id: id, seq: 5, finish_reason: "complete" }));
      } else if (message.type === "resume" && id.startsWith("listen-")) {
        // the client resends its unacknowledged audio behind audio_offset, then end
      } else if (message.type === "resume") {
        // one frame the client already has (a replay overlap), then the rest
        for (let seq = message.after_seq; seq <= WORDS.length; seq++) {
          ws.send(chunk(id, seq, WORDS[seq - 1], seq === WORDS.length));
        }
      }
    });
  });
  return { server, seen };
}

describe("resume by seq (scripted server)", () => {
  let scripted;
  let url;
  before(async () => {
    scripted = scriptedServer();
    await new Promise((resolve) => scripted.server.once("listening", resolve));
    url = `http://127.0.0.1:${scripted.server.address().port}`;
  });
  after(() => new Promise((resolve) => scripted.server.close(resolve)));

  test("a chat stream cut mid-answer resumes after the last seq: every chunk once, in order", async () => {
    const sluice = new SluiceClient(url, FAST);
    try {
      const events = await collect(sluice.chatStream("r", "count", { requestId: "cut-1" }));
      assert.ok(events.every((e) => e instanceof ChatChunk));
      assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
      assert.equal(events.map((e) => e.content).join(""), WORDS.join(""));
      const resume = scripted.seen.messages.find((m) => m.type === "resume" && m.request_id === "cut-1");
      assert.deepEqual(resume, { type: "resume", request_id: "cut-1", after_seq: 3 });
      assert.equal(sluice.stats.resumed, 1);
      assert.equal(sluice.stats.lost, 0);
      assert.equal(sluice.stats.connects, 2);
    } finally {
      sluice.close();
    }
  });

  test("speak counts its binary frames in seq and resumes after the last audio", async () => {
    const sluice = new SluiceClient(url, FAST);
    try {
      const items = await collect(sluice.speak("r", "hi", { requestId: "speak-1" }));
      const audio = items.filter((i) => i instanceof Uint8Array).flatMap((a) => [...a]);
      assert.deepEqual(audio, [1, 2, 3, 4, 5, 6]);
      assert.ok(items.at(-1) instanceof Done);
      const resume = scripted.seen.messages.find((m) => m.type === "resume" && m.request_id === "speak-1");
      assert.equal(resume.after_seq, 3);
    } finally {
      sluice.close();
    }
  });

  test("listen resends its audio after the last final transcript behind audio_offset", async () => {
    const sluice = new SluiceClient(url, FAST);
    const audio = new Uint8Array(32000).map((_, i) => i % 251); // 1 s of 16 kHz PCM16
    async function* microphone() {
      for (let i = 0; i < audio.length; i += 640) yield audio.subarray(i, i + 640);
    }
    try {
      const events = await collect(sluice.listen("r", microphone(), { requestId: "listen-1" }));
      assert.ok(events[0] instanceof Transcript && events[0].isFinal);
      assert.ok(events.at(-1) instanceof Done);
      const messages = scripted.seen.messages.filter((m) => m.request_id === "listen-1");
      const types = messages.map((m) => m.type);
      // on the new socket: resume, audio_offset (the end of the final: 100 ms), end
      assert.deepEqual(types.slice(-3), ["resume", "audio_offset", "end"]);
      assert.equal(messages.at(-2).offset, 100 * 32);
      const keys = [...scripted.seen.audio.keys()].filter((k) => k.endsWith(":listen-1"));
      assert.equal(keys.length, 2); // the first socket, then the one it resumed on
      const resent = scripted.seen.audio.get(keys[1]);
      assert.deepEqual(resent, [...audio.subarray(100 * 32)]);
      assert.equal(sluice.stats.resumed, 1);
    } finally {
      sluice.close();
    }
  });

  test("request_not_found in answer to resume ends the request with ConnectionLost", async () => {
    const sluice = new SluiceClient(url, FAST);
    try {
      await assert.rejects(collect(sluice.chatStream("r", "count", { requestId: "cut-unknown" })), (error) => {
        assert.ok(error instanceof ConnectionLost, String(error));
        assert.equal(error.frame.error.name, "request_not_found");
        assert.equal(error.retryable, true);
        return true;
      });
      assert.equal(sluice.stats.lost, 1);
    } finally {
      sluice.close();
    }
  });

  test("with resume off, a started request cut mid-answer ends with ConnectionLost", async () => {
    const sluice = new SluiceClient(url, { ...FAST, resume: false });
    try {
      await assert.rejects(collect(sluice.chatStream("r", "count", { requestId: "cut-2" })), ConnectionLost);
      assert.equal(sluice.stats.resumed, 0);
    } finally {
      sluice.close();
    }
  });
});
