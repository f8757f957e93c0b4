// What the client's streams yield: typed events parsed from server frames.
//
// A non-terminal server frame -> one event; a terminal non-error frame -> the last
// event (a ChatChunk with a finishReason, or Done); a terminal error frame is thrown
// instead (see errors.js). Every event keeps the frame it came from in `frame`, so
// nothing the server sent is hidden. Names follow the Python client's.

import { finishReason, isObject } from "./framing.js";

/** A frame of a type this client does not model: `type` and the whole `frame`. */
export class Event {
  /**
   * @param {string} requestId
   * @param {string} type
   * @param {Record<string, any>} frame
   */
  constructor(requestId, type, frame) {
    this.requestId = requestId;
    this.type = type;
    this.frame = frame;
  }

  /** The request's `metadata`, echoed by the server on every frame. */
  get metadata() {
    return this.frame.metadata;
  }

  /** The server's number of this frame within its request (null where it sends none). */
  get seq() {
    return Number.isInteger(this.frame.seq) ? this.frame.seq : null;
  }
}

/** A piece of the answer; the last one has `finishReason` (complete, max_tokens, ...). */
export class ChatChunk extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    const chunk = inner(frame, "chunk");
    const message = inner(inner(chunk, "model_response"), "message");
    this.content = String(message.content ?? "");
    this.modelId = str(chunk.model_id);
    this.providerId = str(chunk.provider_id);
    this.modelName = str(chunk.model_name);
    this.finishReason = finishReason(frame);
    /** @type {Record<string, any>[]} the tool calls this chunk carries (OpenAI's shape with `index`) */
    this.toolCalls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
    /** `tool_calls` on the last chunk of an answer that stopped to call tools (its finishReason is `other`) */
    this.finishDetail = str(chunk.finish_detail);
  }
}

/**
 * A model failed mid-answer: drop the partial output; the answer restarts on another.
 * For chat, drop this request's text so far; for speak, drop the last `dropBytes` audio
 * bytes received (the partial audio of segment `segment`).
 */
export class ModelReset extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    const error = inner(frame, "error");
    this.modelId = str(error.model_id);
    this.message = String(error.message ?? "");
    this.segment = error.segment ?? error.segment_id ?? null;
    this.dropBytes = Number.isInteger(error.drop_bytes) ? error.drop_bytes : null;
  }
}

/** A non-terminal error other than a reset (e.g. duplicate_request_id). */
export class Notice extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    const error = inner(frame, "error");
    this.name = String(error.name ?? "");
    this.message = String(error.message ?? "");
  }
}

/**
 * Speak: which text span the audio just sent covers and which provider made it.
 * Converse: a sentence of the reply was wholly sent (`turnId`, `startMs` in the reply audio).
 */
export class SpeakSegment extends Event {
  /** The segment object (the `segment` field, or the frame itself). */
  get data() {
    return isObject(this.frame.segment) ? this.frame.segment : this.frame;
  }

  /** Converse: the turn the sentence belongs to (null on speak). */
  get turnId() {
    return turnOf(this.frame);
  }

  /** Converse: where the sentence starts in the conversation's reply audio, in ms (null on speak). */
  get startMs() {
    return typeof this.frame.start_ms === "number" ? this.frame.start_ms : null;
  }
}

/** Converse: the user's turn is complete; `text` is all its finals joined (or the typed text). */
export class UserTurn extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
    this.text = String(frame.text ?? "");
  }
}

/** Converse: the chat router is asked for the reply of turn `turnId`. */
export class ReplyStarted extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
  }
}

/** Converse: a piece (`delta`) of the reply's text. */
export class ReplyText extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
    this.delta = String(frame.delta ?? "");
    this.modelId = str(frame.model_id);
    this.providerId = str(frame.provider_id);
  }
}

/**
 * Converse: the reply calls tools: every call of its answer, whole (`{id, type,
 * function: {name, arguments}}`); answer each with `Conversation.toolResult`.
 */
export class ToolCalls extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
    /** @type {Record<string, any>[]} */
    this.calls = Array.isArray(frame.calls) ? frame.calls : [];
    this.modelId = str(frame.model_id);
    this.providerId = str(frame.provider_id);
  }
}

/**
 * Converse: the reply stopped (`reason` barge_in or cancelled): stop playback and drop
 * reply audio after `keptBytes`; `text` is what the history keeps.
 */
export class ReplyInterrupted extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
    this.reason = String(frame.reason ?? "");
    this.keptMs = num(frame.kept_ms);
    this.sentMs = num(frame.sent_ms);
    this.keptBytes = num(frame.kept_bytes);
    this.sentBytes = num(frame.sent_bytes);
    this.text = String(frame.text ?? "");
  }
}

/**
 * Converse: the turn is over (`reason` complete, interrupted or error); `replyText` is
 * what the history keeps; `error` ({name, message}) when the reply failed.
 */
export class TurnEnded extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.turnId = turnOf(frame);
    this.reason = String(frame.reason ?? "");
    this.userText = String(frame.user_text ?? "");
    this.replyText = String(frame.reply_text ?? "");
    /** @type {{name: string, message: string} | null} */
    this.error = isObject(frame.error)
      ? { name: String(frame.error.name ?? ""), message: String(frame.error.message ?? "") }
      : null;
  }
}

/** Listen / converse: the text of one VAD segment; `isFinal` once the segment is done. */
export class Transcript extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    const body = isObject(frame.transcript) ? frame.transcript : frame;
    this.text = String(body.text ?? "");
    this.isFinal = Boolean(body.is_final);
    this.segmentId = body.segment_id ?? null;
    this.startMs = typeof body.start_ms === "number" ? body.start_ms : null;
    this.endMs = typeof body.end_ms === "number" ? body.end_ms : null;
    this.providerId = str(body.provider_id);
    this.modelId = str(body.model_id);
  }
}

/** Listen / converse: the VAD heard speech start. */
export class SpeechStarted extends Event {}

/** Listen / converse: the VAD heard speech end. */
export class SpeechEnded extends Event {}

/** Speak / listen / converse: the request ended normally; `finishReason` says how. */
export class Done extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.finishReason = finishReason(frame) ?? "complete";
    /** @type {Record<string, any> | null} converse: {turns, audio_in_ms, audio_out_ms} */
    this.usage = isObject(frame.usage) ? frame.usage : null;
  }
}

/**
 * A server frame that is not a terminal error -> its event.
 * @param {string} requestId
 * @param {Record<string, any>} frame
 * @returns {Event}
 */
export function parseEvent(requestId, frame) {
  const type = String(frame.type ?? "");
  switch (type) {
    case "error":
      return inner(frame, "error").name === "model_unavailable"
        ? new ModelReset(requestId, type, frame)
        : new Notice(requestId, type, frame);
    case "chunk":
      return new ChatChunk(requestId, type, frame);
    case "transcript":
      return new Transcript(requestId, type, frame);
    case "segment":
      return new SpeakSegment(requestId, type, frame);
    case "speech_started":
      return new SpeechStarted(requestId, type, frame);
    case "speech_ended":
      return new SpeechEnded(requestId, type, frame);
    case "user_turn":
      return new UserTurn(requestId, type, frame);
    case "reply_started":
      return new ReplyStarted(requestId, type, frame);
    case "reply_text":
      return new ReplyText(requestId, type, frame);
    case "tool_calls":
      return new ToolCalls(requestId, type, frame);
    case "reply_interrupted":
      return new ReplyInterrupted(requestId, type, frame);
    case "turn_ended":
      return new TurnEnded(requestId, type, frame);
    default:
      return finishReason(frame) != null ? new Done(requestId, type, frame) : new Event(requestId, type, frame);
  }
}

/** @param {Record<string, any>} frame @returns {number | null} */
function turnOf(frame) {
  return num(frame.turn_id);
}

/** @param {unknown} value @returns {number | null} */
function num(value) {
  return typeof value === "number" ? value : null;
}

/** @param {unknown} value */
function str(value) {
  return typeof value === "string" ? value : null;
}

/** @param {Record<string, any>} frame @param {string} key @returns {Record<string, any>} */
function inner(frame, key) {
  return isObject(frame[key]) ? frame[key] : {};
}
