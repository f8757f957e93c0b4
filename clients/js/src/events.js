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

/** Speak: which text span the audio just sent covers and which provider made it. */
export class SpeakSegment extends Event {
  /** The segment object (the `segment` field, or the frame itself). */
  get data() {
    return isObject(this.frame.segment) ? this.frame.segment : this.frame;
  }
}

/** Listen: the text of one VAD segment; `isFinal` once the segment is done. */
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

/** Listen: the VAD heard speech start. */
export class SpeechStarted extends Event {}

/** Listen: the VAD heard speech end. */
export class SpeechEnded extends Event {}

/** Speak / listen: the request ended normally; `finishReason` says how. */
export class Done extends Event {
  /** @param {string} requestId @param {string} type @param {Record<string, any>} frame */
  constructor(requestId, type, frame) {
    super(requestId, type, frame);
    this.finishReason = finishReason(frame) ?? "complete";
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
    default:
      return finishReason(frame) != null ? new Done(requestId, type, frame) : new Event(requestId, type, frame);
  }
}

/** @param {unknown} value */
function str(value) {
  return typeof value === "string" ? value : null;
}

/** @param {Record<string, any>} frame @param {string} key @returns {Record<string, any>} */
function inner(frame, key) {
  return isObject(frame[key]) ? frame[key] : {};
}
