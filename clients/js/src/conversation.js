// A conversation on an agent router's converse socket: the user's audio and control
// messages in (send* methods), typed events and reply audio out (async iteration).
//
//   const talk = sluice.converse("assistant", { format: audioFormat("pcm_s16le", 16000) });
//   talk.sendAudio(frame) ... talk.played(ms) ... talk.end();
//   for await (const item of talk) { Uint8Array: reply audio | SpeechStarted | Transcript | ... }
//
// Conversations share their router's socket with each other (one per request_id), like
// the other endpoints' requests.

import { Cancelled, errorFromWire } from "./errors.js";
import { parseEvent } from "./events.js";
import { finishReason } from "./framing.js";

/**
 * A request's items until its terminal frame: audio as Uint8Array, other frames as events.
 * Throws the request's terminal error; leaving early (or `signal` aborting) cancels it.
 * @param {import("./request.js").RequestHandle} handle
 * @param {AbortSignal | undefined} signal
 * @returns {AsyncGenerator<any, void, undefined>}
 */
export async function* readEvents(handle, signal) {
  const onAbort = () => handle.cancel(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const item = await handle.next();
      if (item.kind === "error") throw item.error;
      if (item.kind === "audio") {
        yield item.audio;
        continue;
      }
      const terminal = finishReason(item.frame) !== null;
      if (terminal && item.frame.type === "error") throw errorFromWire(item.frame);
      yield parseEvent(handle.id, item.frame);
      if (terminal) return;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    handle.close();
  }
}

/** One conversation: send the user's side with its methods, iterate it for the agent's. */
export class Conversation {
  /**
   * @param {import("./request.js").RequestHandle} handle
   * @param {AbortSignal | undefined} signal
   */
  constructor(handle, signal) {
    this._handle = handle;
    // the signal is watched from the start, not from the first read of the events
    signal?.addEventListener("abort", () => handle.cancel(signal.reason), { once: true });
    this._events = readEvents(handle, undefined);
  }

  /** The conversation's request_id. */
  get requestId() {
    return this._handle.id;
  }

  /** Whether the conversation has ended (its terminal frame or error came, or it was cancelled). */
  get ended() {
    return this._handle.ended;
  }

  /**
   * The user's audio, any chunk size, in the conversation's `format`.
   * @param {ArrayBuffer | ArrayBufferView} audio
   */
  sendAudio(audio) {
    if (audio.byteLength) this._handle.sendAudio(audio);
  }

  /**
   * Report playback: `ms` of the conversation's reply audio played so far (counted from
   * its first reply byte, across turns, without dropped audio). Send it every few
   * hundred ms while playing, so a barge-in keeps exactly what the user heard.
   * @param {number} ms
   */
  played(ms) {
    this._handle.sendJson({ type: "played", ms: Math.max(0, Math.round(ms)) });
  }

  /**
   * A typed user turn, answered at once when no reply runs (`respond: false` only adds
   * it to the history).
   * @param {string} text
   * @param {{respond?: boolean}} [options]
   */
  text(text, options = {}) {
    this._handle.sendJson(options.respond === undefined ? { type: "text", text } : { type: "text", text, respond: options.respond });
  }

  /** Stop the running reply, as a barge-in would. */
  interrupt() {
    this._handle.sendJson({ type: "interrupt" });
  }

  /**
   * Settings for later turns.
   * @param {{instructions?: string, voice?: string, turnDetection?: boolean, tools?: Record<string, unknown>[], toolChoice?: string | Record<string, unknown>}} settings
   */
  update(settings) {
    const message = /** @type {Record<string, unknown>} */ ({ type: "update" });
    if (settings.instructions !== undefined) message.instructions = settings.instructions;
    if (settings.voice !== undefined) message.voice = settings.voice;
    if (settings.turnDetection !== undefined) message.turn_detection = settings.turnDetection;
    if (settings.tools !== undefined) message.tools = settings.tools;
    if (settings.toolChoice !== undefined) message.tool_choice = settings.toolChoice;
    this._handle.sendJson(message);
  }

  /**
   * The output of a call of the last reply's `ToolCalls`; when every call of that reply
   * has its result (and `respond` is not false) the reply to them starts.
   * @param {string} callId
   * @param {string} output
   * @param {{respond?: boolean}} [options]
   */
  toolResult(callId, output, options = {}) {
    const message = /** @type {Record<string, unknown>} */ ({ type: "tool_result", call_id: callId, output });
    if (options.respond !== undefined) message.respond = options.respond;
    this._handle.sendJson(message);
  }

  /** Turn detection off: the audio since the last commit is one user turn. */
  commit() {
    this._handle.sendJson({ type: "commit" });
  }

  /** Turn detection off: drop the audio since the last commit. */
  clear() {
    this._handle.sendJson({ type: "clear" });
  }

  /**
   * Reply now to the history (its last message must be the user's).
   * @param {{instructions?: string}} [options]
   */
  respond(options = {}) {
    this._handle.sendJson(options.instructions === undefined ? { type: "respond" } : { type: "respond", instructions: options.instructions });
  }

  /** The input is over: the open segment is answered, then the iteration ends with Done. */
  end() {
    this._handle.sendJson({ type: "end" });
  }

  /**
   * End the conversation at once (sends `cancel`); the iteration throws `reason`
   * (default: Cancelled).
   * @param {unknown} [reason]
   */
  cancel(reason) {
    const id = this._handle.id;
    this._handle.cancel(reason ?? new Cancelled("the conversation was cancelled", { requestId: id }));
  }

  /**
   * The agent's side: reply audio (Uint8Array, PCM16 mono), SpeechStarted, SpeechEnded,
   * Transcript, UserTurn, ReplyStarted, ReplyText, ToolCalls, SpeakSegment, ReplyInterrupted,
   * TurnEnded, ModelReset / Notice (non-terminal errors), and finally Done; a terminal
   * error is thrown as its SluiceError. Iterate it once.
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  [Symbol.asyncIterator]() {
    return this._events;
  }
}
