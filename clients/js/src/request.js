// One request's client-side state: its outbox, its replay log and its inbox.
//
// caller -> sendJson / sendAudio -> outbox (flushed by its socket when one is open)
//                                 \-> replay log (kept until the first frame comes back)
// socket -> deliver / finish / fail -> inbox -> next() -> caller
//
// A request that has received no frame keeps everything it sent, so its connection
// can put it on a new socket from the start (rewind). The first frame (markStarted)
// drops that log; from then on a cut socket is survived only by `resume`, which
// continues after `lastSeq`, the last frame number the request received. A listen
// request in pcm_s16le or wav also keeps its unacknowledged audio (`tail`), resent
// behind `audio_offset` after the resume (docs/resume.md section 7).

import { encodeAudio, frameSeq, toBytes } from "./framing.js";

/**
 * @typedef {string | Uint8Array} Payload one websocket message: JSON text or a binary audio frame
 * @typedef {{kind: "frame", frame: Record<string, any>} | {kind: "audio", audio: Uint8Array} | {kind: "error", error: unknown}} Item
 */

/** A request in flight on one endpoint, from its first message to its terminal frame. */
export class RequestHandle {
  /**
   * @param {string} id
   * @param {{kick(request: RequestHandle): void, forget(request: RequestHandle): void}} owner
   * @param {{maxReplayBytes: number}} options
   */
  constructor(id, owner, options) {
    this.id = id;
    this.owner = owner;
    /** @type {any} the socket the request is on now (null while it waits for one) */
    this.socket = null;
    /** How many sockets the request was put on. */
    this.sends = 0;
    this.started = false;
    this.ended = false;
    /** Waiting for the first new frame after a `resume` was sent. */
    this.resuming = false;
    /** @type {number | null} the seq of the last frame received (null while frames carry none) */
    this.lastSeq = null;
    /** @type {number | null} */
    this.pendingSince = null;
    /** @type {Payload[]} */
    this.queued = [];
    /** @type {Payload[] | null} */
    this._replay = [];
    this._replayBytes = 0;
    this._maxReplayBytes = options.maxReplayBytes;
    /** @type {Item[]} */
    this._inbox = [];
    /** @type {((item: Item) => void) | null} */
    this._waiter = null;
    /** @type {import("./tail.js").AudioTail | null} a listen request's unacknowledged audio */
    this.tail = null;
    /** @type {string | null} the `end` message, once queued */
    this._end = null;
  }

  /** Whether the request can start over on another socket (no frame seen, log kept). */
  get resendable() {
    return !this.started && !this.ended && this._replay !== null;
  }

  /**
   * Queue a JSON message (request_id added) for the server.
   * @param {Record<string, unknown>} message
   */
  sendJson(message) {
    const payload = JSON.stringify({ ...message, request_id: this.id });
    if (message.type === "end") this._end = payload;
    this.enqueue(payload);
  }

  /**
   * Queue audio as a binary frame tagged with this request's id.
   * @param {ArrayBuffer | ArrayBufferView} audio
   */
  sendAudio(audio) {
    if (this.tail !== null) this.tail.add(toBytes(audio));
    this.enqueue(encodeAudio(this.id, audio));
  }

  /**
   * Queue one payload; keep it for a resend unless `replay` is false.
   * @param {Payload} payload
   * @param {boolean} [replay]
   */
  enqueue(payload, replay = true) {
    if (this.ended) return;
    if (replay && this._replay !== null) {
      this._replayBytes += typeof payload === "string" ? payload.length : payload.byteLength;
      if (this._replayBytes > this._maxReplayBytes) this._replay = null;
      else this._replay.push(payload);
    }
    this.queued.push(payload);
    this.owner.kick(this);
  }

  /** Before a resend: the outbox becomes everything the request ever sent. */
  rewind() {
    this.queued = [...(this._replay ?? [])];
  }

  /**
   * Before a resume: `message` goes out first, then whatever was queued while cut off.
   * @param {string} message
   */
  prepend(message) {
    if (this.tail !== null) {
      // the audio after the last final transcript (queued audio included), then the
      // rest of the queue, and `end` again if it was already written
      const [offset, chunks] = this.tail.unheard();
      const rest = this.queued.filter((p) => typeof p === "string");
      this.queued = [JSON.stringify({ type: "audio_offset", offset, request_id: this.id })];
      for (const chunk of chunks) this.queued.push(encodeAudio(this.id, chunk));
      this.queued.push(...rest);
      if (this._end !== null && !rest.includes(this._end)) this.queued.push(this._end);
    }
    this.queued.unshift(message);
  }

  /** A frame came back: the request can no longer be resent from the start. */
  markStarted() {
    this.started = true;
    this._replay = null;
    this._replayBytes = 0;
  }

  /**
   * Whether a text frame is new (not one already received before a resume), noting its seq.
   * @param {Record<string, any>} frame
   */
  accept(frame) {
    const seq = frameSeq(frame);
    if (seq === null) return true;
    if (this.lastSeq !== null && seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    this.resuming = false;
    if (this.tail !== null && frame.type === "transcript" && typeof frame.end_ms === "number") {
      this.tail.heard(frame.end_ms, frame.is_final === true);
    }
    return true;
  }

  /** A binary frame arrived: the server counts it in `seq` too. */
  countAudio() {
    if (this.lastSeq !== null) this.lastSeq += 1;
  }

  /**
   * A non-terminal frame for the caller.
   * @param {Record<string, any>} frame
   */
  deliver(frame) {
    if (!this.ended) this._put({ kind: "frame", frame });
  }

  /**
   * Audio for the caller.
   * @param {Uint8Array} audio
   */
  deliverAudio(audio) {
    if (!this.ended) this._put({ kind: "audio", audio });
  }

  /**
   * The terminal frame: deliver it; nothing is delivered after it.
   * @param {Record<string, any>} frame
   */
  finish(frame) {
    if (this.ended) return;
    this._put({ kind: "frame", frame });
    this.ended = true;
  }

  /**
   * End the request with `error` (thrown to the caller); no-op if it already ended.
   * @param {unknown} error
   */
  fail(error) {
    if (this.ended) return;
    this._put({ kind: "error", error });
    this.ended = true;
  }

  /**
   * The next item for the caller: a frame, audio, or the error that ended the request.
   * @returns {Promise<Item>}
   */
  next() {
    const item = this._inbox.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => {
      this._waiter = resolve;
    });
  }

  /** @param {Item} item */
  _put(item) {
    const waiter = this._waiter;
    if (waiter !== null) {
      this._waiter = null;
      waiter(item);
    } else {
      this._inbox.push(item);
    }
  }

  /**
   * Cancel the request on the server if it still runs (sends `cancel`), then end it
   * with `reason` for the caller.
   * @param {unknown} reason
   */
  cancel(reason) {
    if (this.ended) return;
    if (this.socket !== null) {
      this.queued = [JSON.stringify({ type: "cancel", request_id: this.id })];
      this.owner.kick(this);
    }
    this.fail(reason);
  }

  /** The caller stops listening: cancel the request on the server if it still runs. */
  close() {
    this.cancel(null);
    this.owner.forget(this);
  }
}
