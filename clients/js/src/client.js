// SluiceClient: the JavaScript client of Sluice's websocket endpoints.
//
//   const sluice = new SluiceClient("http://sluice:9099");
//   for await (const event of sluice.chatStream("default", "Hello")) { ... }
//
// One websocket per endpoint (chatStream of a router, speak, listen), opened on first
// use and shared by every request to it; reconnection, transparent resends, resume
// and backoff live in connection.js.

import { checkedBackoff } from "./backoff.js";
import { Connection } from "./connection.js";
import { Conversation, readEvents } from "./conversation.js";
import { ClientClosed } from "./errors.js";
import { ChatChunk, ModelReset, Transcript } from "./events.js";
import { toBytes } from "./framing.js";
import {
  audioFormat,
  chatMessage,
  converseMessage,
  endMessage,
  listenMessage,
  speakMessage,
  textMessage,
} from "./messages.js";

/**
 * @typedef {object} ResolvedOptions
 * @property {any} WebSocket
 * @property {string[]} protocols
 * @property {Record<string, string> | null} headers
 * @property {{initial: number, maximum: number, multiplier: number, jitter: number}} backoff
 * @property {number} connectTimeout ms
 * @property {number} pendingTimeout ms
 * @property {number} maxSends
 * @property {number} maxReplayBytes
 * @property {boolean} resume
 * @property {number | null} heartbeat ms
 * @property {() => number} random
 */

/**
 * Counters of one client (all endpoints); they only grow.
 * @typedef {{connects: number, connectFailures: number, closes: number, resent: number, resumed: number, lost: number, completed: number, failed: number}} ClientStats
 */

/**
 * `http(s)://` or `ws(s)://` base URL -> the websocket base, without a trailing slash.
 * @param {string} baseUrl
 */
function wsBase(baseUrl) {
  return baseUrl.replace(/\/+$/, "").replace(/^http(s?):\/\//, "ws$1://");
}

/** A fresh request id (crypto.randomUUID where the runtime has it). */
function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID().replaceAll("-", "");
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

/** A client of one Sluice deployment (an instance, or a load balancer in front of many). */
export class SluiceClient {
  /**
   * @param {string} baseUrl `http(s)://host:port` (or `ws(s)://`)
   * @param {import("../index.js").ClientOptions} [options]
   */
  constructor(baseUrl, options = {}) {
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError(
        "no WebSocket in this runtime: pass one, e.g. new SluiceClient(url, { WebSocket }) with `import { WebSocket } from \"ws\"`",
      );
    }
    this.baseUrl = wsBase(baseUrl);
    /** @type {ResolvedOptions} */
    this.options = {
      WebSocket: WS,
      protocols: options.apiKey ? ["sluice.v1", `sluice.auth.${options.apiKey}`] : [],
      headers: options.headers ?? null,
      backoff: checkedBackoff(options.backoff),
      connectTimeout: options.connectTimeout ?? 10_000,
      pendingTimeout: options.pendingTimeout ?? 30_000,
      maxSends: options.maxSends ?? 10,
      maxReplayBytes: options.maxReplayBytes ?? 8 * 1024 * 1024,
      resume: options.resume ?? true,
      heartbeat: options.heartbeat === undefined ? 20_000 : options.heartbeat,
      random: options.random ?? Math.random,
    };
    /** @type {ClientStats} */
    this.stats = { connects: 0, connectFailures: 0, closes: 0, resent: 0, resumed: 0, lost: 0, completed: 0, failed: 0 };
    /** @type {Map<string, Connection>} */
    this._connections = new Map();
    this._closed = false;
  }

  /** Close every connection; requests in flight end with ClientClosed. */
  close() {
    this._closed = true;
    for (const connection of this._connections.values()) connection.close();
    this._connections.clear();
  }

  /**
   * The shared connection to the endpoint at `path` (created on first use).
   * @param {string} path
   */
  connection(path) {
    if (this._closed) throw new ClientClosed("the client is closed");
    let connection = this._connections.get(path);
    if (connection === undefined) {
      connection = new Connection(this.baseUrl + path, this.options, this.stats);
      this._connections.set(path, connection);
    }
    return connection;
  }

  /**
   * Stream one chat answer: a message (a string is the user's content) in, events out.
   * Yields ChatChunk (the last has finishReason) and ModelReset (drop the text so far).
   * With `tools` / `toolChoice` (OpenAI's shapes) the model may call tools: whole calls
   * arrive in `ChatChunk.toolCalls`, and such an answer ends with finishReason `other`
   * and finishDetail `tool_calls`. Throws a SluiceError subclass on a terminal error; an aborted `signal` sends cancel
   * and throws the signal's reason; leaving the loop early sends cancel.
   * @param {string} router
   * @param {string | Record<string, any>} message
   * @param {import("../index.js").ChatOptions} [options]
   */
  async *chatStream(router, message, options = {}) {
    const body = chatMessage(message, options);
    yield* this._run(`/v1/language/${enc(router)}/chatStream`, body, options, null);
  }

  /**
   * The whole answer's text (resets applied), from chatStream with the same arguments.
   * @param {string} router
   * @param {string | Record<string, any>} message
   * @param {import("../index.js").ChatOptions} [options]
   */
  async chatText(router, message, options = {}) {
    let text = [];
    for await (const event of this.chatStream(router, message, options)) {
      if (event instanceof ModelReset) text = [];
      else if (event instanceof ChatChunk) text.push(event.content);
    }
    return text.join("");
  }

  /**
   * Synthesize speech: a text, or streamed pieces (an async iterable, e.g. an LLM's
   * tokens), in; audio out. Yields Uint8Array audio in the requested format,
   * SpeakSegment, ModelReset (drop its dropBytes of audio) and finally Done.
   * @param {string} router
   * @param {string | AsyncIterable<string> | Iterable<string>} text
   * @param {import("../index.js").SpeakOptions} [options]
   */
  async *speak(router, text, options = {}) {
    const whole = typeof text === "string";
    const body = speakMessage({
      text: whole ? text : undefined,
      final: whole,
      format: options.format,
      voice: options.voice,
      metadata: options.metadata,
    });
    const pump = whole ? null : pumpText(text);
    yield* this._run(`/v1/speech/${enc(router)}/speak`, body, options, pump);
  }

  /**
   * The whole synthesized audio of `text`, resets applied (a ModelReset's dropBytes
   * are removed), so the bytes returned play gaplessly.
   * @param {string} router
   * @param {string | AsyncIterable<string> | Iterable<string>} text
   * @param {import("../index.js").SpeakOptions} [options]
   * @returns {Promise<Uint8Array>}
   */
  async speakBytes(router, text, options = {}) {
    /** @type {Uint8Array[]} */
    let parts = [];
    let size = 0;
    for await (const item of this.speak(router, text, options)) {
      if (item instanceof Uint8Array) {
        parts.push(item);
        size += item.length;
      } else if (item instanceof ModelReset && item.dropBytes) {
        const whole = concat(parts, size);
        size = Math.max(0, size - item.dropBytes);
        parts = [whole.subarray(0, size)];
      }
    }
    return concat(parts, size);
  }

  /**
   * Transcribe speech: audio chunks (an async iterable of bytes in `format`) in, events
   * out. Sends the audio as it arrives, then `end`. Yields SpeechStarted, Transcript
   * (interim and final), SpeechEnded and finally Done.
   * @param {string} router
   * @param {AsyncIterable<ArrayBuffer | ArrayBufferView> | Iterable<ArrayBuffer | ArrayBufferView>} audio
   * @param {import("../index.js").ListenOptions} options
   */
  async *listen(router, audio, options) {
    const body = listenMessage({ ...options, format: options?.format ?? audioFormat() });
    yield* this._run(`/v1/speech/${enc(router)}/listen`, body, options, pumpAudio(audio));
  }

  /**
   * The final transcripts of a whole recording given as bytes in `format`, sent in
   * `chunkBytes` pieces (3200: 100 ms of 16 kHz PCM16) and then `end`.
   * @param {string} router
   * @param {ArrayBuffer | ArrayBufferView} audio
   * @param {import("../index.js").ListenOptions & {chunkBytes?: number}} options
   * @returns {Promise<Transcript[]>}
   */
  async listenBytes(router, audio, options) {
    const chunk = options?.chunkBytes ?? 3200;
    if (!(chunk >= 1)) throw new RangeError("chunkBytes must be at least 1");
    const bytes = toBytes(audio);
    const pieces = function* () {
      for (let at = 0; at < bytes.length; at += chunk) yield bytes.subarray(at, at + chunk);
    };
    const finals = [];
    for await (const event of this.listen(router, pieces(), options)) {
      if (event instanceof Transcript && event.isFinal) finals.push(event);
    }
    return finals;
  }

  /**
   * Start a conversation with an agent router (voice in, voice out): the user's audio in
   * `options.format` goes in with `sendAudio`, the agent's events and reply audio come
   * out by iterating the returned Conversation. Conversations share the router's socket.
   * @param {string} router
   * @param {import("../index.js").ConverseOptions} [options]
   * @returns {Conversation}
   */
  converse(router, options = {}) {
    const signal = options.signal;
    signal?.throwIfAborted();
    const body = converseMessage({ ...options, format: options.format ?? audioFormat() });
    const handle = this.connection(`/v1/agent/${enc(router)}/converse`).open(options.requestId ?? newId(), body);
    return new Conversation(handle, signal);
  }

  /**
   * One request on the endpoint at `path`: its first message and optional input pump
   * in; its events (and audio) out until the terminal frame.
   * @param {string} path
   * @param {Record<string, unknown>} body
   * @param {{requestId?: string, signal?: AbortSignal}} options
   * @param {((handle: import("./request.js").RequestHandle) => Promise<void>) | null} pump
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  async *_run(path, body, options, pump) {
    const signal = options?.signal;
    signal?.throwIfAborted();
    const handle = this.connection(path).open(options?.requestId ?? newId(), body);
    if (pump !== null) pump(handle).catch((error) => handle.cancel(error)); // the input failed: stop the request
    yield* readEvents(handle, signal);
  }
}

/**
 * An input pump for speak: each text piece as a `text` message, then `final`.
 * @param {AsyncIterable<string> | Iterable<string>} pieces
 */
function pumpText(pieces) {
  /** @param {import("./request.js").RequestHandle} handle */
  return async (handle) => {
    for await (const piece of pieces) {
      if (handle.ended) return;
      if (piece) handle.sendJson(textMessage(piece));
    }
    handle.sendJson(textMessage("", true));
  };
}

/**
 * An input pump for listen: each audio chunk as a binary frame, then `end`.
 * @param {AsyncIterable<ArrayBuffer | ArrayBufferView> | Iterable<ArrayBuffer | ArrayBufferView>} audio
 */
function pumpAudio(audio) {
  /** @param {import("./request.js").RequestHandle} handle */
  return async (handle) => {
    for await (const chunk of audio) {
      if (handle.ended) return;
      if (chunk.byteLength) handle.sendAudio(chunk);
    }
    handle.sendJson(endMessage());
  };
}

/** @param {string} segment */
function enc(segment) {
  return encodeURIComponent(segment);
}

/** @param {Uint8Array[]} parts @param {number} size */
function concat(parts, size) {
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    const take = Math.min(part.length, size - at);
    out.set(part.subarray(0, take), at);
    at += take;
  }
  return out;
}
