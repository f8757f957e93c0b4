// One open websocket of an endpoint: the requests on it, what it sends and what it reads.
//
// requests' outboxes -> ws.send -> server -> frames routed by request_id -> requests
//
// The socket hands every frame to its request and tells its owner (the endpoint's
// Connection) what happened: a terminal frame, a `shutting_down` answer to a request
// that can be resent, a failed `resume`, and finally the close.

import { decodeAudio, errorName, finishReason } from "./framing.js";

const SHUTTING_DOWN = "shutting_down";
const OPEN = 1;

/** Error names a server gives a `resume` it cannot honour (unknown request, or no resume at all). */
export const RESUME_REFUSALS = Object.freeze(["request_not_found", "unsupported_message_type", "invalid_request"]);

/** One open websocket: its requests, routed by request_id. */
export class Socket {
  /**
   * @param {import("./connection.js").Connection} owner
   * @param {WebSocket} ws an open websocket (browser or `ws` package)
   */
  constructor(owner, ws) {
    this.owner = owner;
    this.ws = ws;
    /** @type {Map<string, import("./request.js").RequestHandle>} */
    this.requests = new Map();
    this.retiring = false;
    this.gotFrame = false;
    this.closed = false;
    /** @type {number | null} */
    this.closeCode = null;
    ws.onmessage = (event) => this._onMessage(event.data);
    ws.onclose = (event) => this._onClose(event.code);
    ws.onerror = () => {};
    /** @type {ReturnType<typeof setInterval> | null} */
    this._heartbeat = null;
    this._startHeartbeat(owner.heartbeat);
  }

  /**
   * Where the WebSocket can ping (Node's `ws`; browsers cannot), ping every `every` ms
   * and cut the socket when a pong has not come back by the next ping: a peer gone
   * silent (a half-open network) is then noticed like a cut connection.
   * @param {number | null} every
   */
  _startHeartbeat(every) {
    const ws = /** @type {any} */ (this.ws);
    if (!every || typeof ws.ping !== "function" || typeof ws.on !== "function") return;
    let answered = true;
    ws.on("pong", () => {
      answered = true;
    });
    this._heartbeat = setInterval(() => {
      if (!answered) {
        ws.terminate();
        return;
      }
      answered = false;
      try {
        ws.ping();
      } catch {
        // closing already
      }
    }, every);
  }

  /** Whether a new request may be put on this socket. */
  get usable() {
    return !this.retiring && !this.closed && this.ws.readyState === OPEN;
  }

  /**
   * Put a request (its outbox already holds what it must send) on this socket.
   * @param {import("./request.js").RequestHandle} request
   */
  assign(request) {
    request.socket = this;
    request.sends += 1;
    this.requests.set(request.id, request);
    this.flush(request);
  }

  /**
   * Send what the request has queued, if it is on this socket and the socket is open.
   * @param {import("./request.js").RequestHandle} request
   */
  flush(request) {
    if (request.socket !== this || this.ws.readyState !== OPEN) return;
    const queued = request.queued;
    request.queued = [];
    for (const payload of queued) this.ws.send(payload);
  }

  /** Take no new requests; close once the requests on it have ended. */
  retire() {
    this.retiring = true;
    this.owner.socketRetired(this);
    this.closeIfIdle();
  }

  /** A retiring socket with no requests left is closed (1000). */
  closeIfIdle() {
    if (this.retiring && this.requests.size === 0) this.close(1000);
  }

  /**
   * Close the websocket; its close event reports to the connection.
   * @param {number} [code]
   */
  close(code = 1000) {
    if (!this.closed) {
      try {
        this.ws.close(code);
      } catch {
        // already closing
      }
    }
  }

  /** @param {unknown} data */
  _onMessage(data) {
    if (typeof data === "string") this._onText(data);
    else this._onAudio(/** @type {ArrayBuffer} */ (data));
  }

  /** @param {string} data */
  _onText(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame !== "object" || frame === null) return;
    const request = typeof frame.request_id === "string" ? this.requests.get(frame.request_id) : undefined;
    if (request === undefined) return;
    this.gotFrame = true;
    this.owner.socketWorked(this);
    const reason = finishReason(frame);
    const name = errorName(frame);
    if (request.resuming && name !== null && RESUME_REFUSALS.includes(name)) {
      this.requests.delete(request.id);
      this.owner.resumeRefused(request, frame);
      this.closeIfIdle();
      return;
    }
    if (name === SHUTTING_DOWN) {
      if (!this.retiring) this.retire();
      if (reason !== null && request.resendable) {
        this.requests.delete(request.id);
        this.owner.resend(request);
        this.closeIfIdle();
        return;
      }
    }
    if (!request.accept(frame)) return;
    request.markStarted();
    if (reason === null) {
      request.deliver(frame);
      return;
    }
    this.requests.delete(request.id);
    this.owner.onTerminal(frame);
    request.finish(frame);
    this.closeIfIdle();
  }

  /** @param {ArrayBuffer} data */
  _onAudio(data) {
    const decoded = decodeAudio(data);
    if (decoded === null) return;
    const request = this.requests.get(decoded[0]);
    if (request === undefined) return;
    this.gotFrame = true;
    request.markStarted();
    request.countAudio();
    request.deliverAudio(decoded[1]);
  }

  /** @param {number} code */
  _onClose(code) {
    if (this.closed) return;
    this.closed = true;
    this.closeCode = code;
    if (this._heartbeat !== null) clearInterval(this._heartbeat);
    this.ws.onmessage = null;
    this.ws.onclose = null;
    this.owner.socketClosed(this);
  }
}
