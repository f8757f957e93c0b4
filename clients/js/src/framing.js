// The wire format shared by every endpoint: binary audio framing and the terminal rule.
//
// Binary frame: byte 0 = N (1-128), bytes 1..N = UTF-8 request_id, the rest audio.
// A text frame ends its request when it carries a `finish_reason` (on a chunk, on an
// error, or at the top level of e.g. `done`).

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The longest request_id, in UTF-8 bytes, a binary frame can carry. */
export const MAX_REQUEST_ID_BYTES = 128;

/**
 * (request_id, audio bytes) -> one binary frame: N, N bytes of id, the audio.
 * @param {string} requestId
 * @param {ArrayBufferView | ArrayBuffer} audio
 * @returns {Uint8Array}
 */
export function encodeAudio(requestId, audio) {
  const id = encoder.encode(requestId);
  if (id.length < 1 || id.length > MAX_REQUEST_ID_BYTES) {
    throw new RangeError("request_id must encode to 1-128 bytes");
  }
  const body = toBytes(audio);
  const frame = new Uint8Array(1 + id.length + body.length);
  frame[0] = id.length;
  frame.set(id, 1);
  frame.set(body, 1 + id.length);
  return frame;
}

/**
 * One binary frame -> [request_id, audio], or null when its header is malformed.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {[string, Uint8Array] | null}
 */
export function decodeAudio(data) {
  const bytes = toBytes(data);
  if (bytes.length === 0) return null;
  const size = bytes[0];
  if (size < 1 || size > MAX_REQUEST_ID_BYTES || bytes.length < 1 + size) return null;
  try {
    return [decoder.decode(bytes.subarray(1, 1 + size)), bytes.subarray(1 + size)];
  } catch {
    return null;
  }
}

/**
 * A server text frame -> its finish_reason when it is terminal, else null.
 * @param {Record<string, any>} frame
 * @returns {string | null}
 */
export function finishReason(frame) {
  for (const key of ["chunk", "error"]) {
    const inner = frame[key];
    if (isObject(inner) && inner.finish_reason != null) return String(inner.finish_reason);
  }
  return frame.finish_reason == null ? null : String(frame.finish_reason);
}

/**
 * An `error` frame -> its `error.name`; any other frame -> null.
 * @param {Record<string, any>} frame
 * @returns {string | null}
 */
export function errorName(frame) {
  if (frame.type !== "error" || !isObject(frame.error)) return null;
  return typeof frame.error.name === "string" ? frame.error.name : null;
}

/**
 * A frame's `seq` (the server's per-request frame number) when it carries one, else null.
 * @param {Record<string, any>} frame
 * @returns {number | null}
 */
export function frameSeq(frame) {
  return Number.isInteger(frame.seq) ? frame.seq : null;
}

/**
 * Any binary view or buffer -> a Uint8Array over the same bytes (no copy).
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {Uint8Array}
 */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError("audio must be an ArrayBuffer or a typed array");
}

/**
 * Whether a value is a plain (non-null, non-array) object.
 * @param {unknown} value
 * @returns {value is Record<string, any>}
 */
export function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
