// One endpoint URL (e.g. /v1/language/r/chatStream): its websockets and the requests on them.
//
//   open() -> current socket -> ws.send ... ws.onmessage -> requests
//         \-> pending (no usable socket) -> dialer: connect with backoff + jitter -/
//
// When a socket ends (a close 1001/1011/1012, a cut connection): requests that had
// received no frame are put on the next socket from the start (transparently);
// requests already streaming are resumed there with {"type": "resume", "request_id",
// "after_seq"} when the server numbers its frames (`seq`) and resume is on; the
// others end with ConnectionLost(retryable). A `shutting_down` answer to a request
// that had received nothing is the instance draining: that socket retires and the
// request is resent on a new socket, which the load balancer sends elsewhere.

import { backoffDelay } from "./backoff.js";
import { ClientClosed, ConnectFailed, ConnectionLost, RouterNotFound } from "./errors.js";
import { resumeMessage } from "./messages.js";
import { AudioTail } from "./tail.js";
import { RequestHandle } from "./request.js";
import { Socket } from "./socket.js";

/** Policy (1008) and too big (1009): sending the same requests again would fail again. */
const FATAL_CLOSE_CODES = new Set([1008, 1009]);

/**
 * @typedef {import("./client.js").ResolvedOptions} ResolvedOptions
 * @typedef {import("./client.js").ClientStats} ClientStats
 */

/** Requests multiplexed over websockets to one endpoint URL, reconnecting as needed. */
export class Connection {
  /**
   * @param {string} url
   * @param {ResolvedOptions} options
   * @param {ClientStats} stats
   */
  constructor(url, options, stats) {
    this.url = url;
    this._options = options;
    this._stats = stats;
    /** @type {Socket | null} */
    this._current = null;
    /** @type {Set<Socket>} */
    this._sockets = new Set();
    /** @type {RequestHandle[]} */
    this._pending = [];
    /** @type {Map<string, RequestHandle>} */
    this._live = new Map();
    this._failures = 0;
    this._dialing = false;
    /** @type {Set<() => void>} wakes a dialer's sleep (on close) */
    this._sleepers = new Set();
    this._closed = false;
  }

  /**
   * Start a request: `first` (its opening message) goes out on a usable socket.
   * @param {string} requestId
   * @param {Record<string, unknown>} first
   * @returns {RequestHandle} the handle the caller reads from and sends further input on
   */
  open(requestId, first) {
    if (this._closed) throw new ClientClosed("the client is closed", { requestId });
    if (this._live.has(requestId)) {
      throw new RangeError(`request_id ${JSON.stringify(requestId)} is already in flight on ${this.url}`);
    }
    const request = new RequestHandle(requestId, this, { maxReplayBytes: this._options.maxReplayBytes });
    if (first.type === "listen") {
      const format = /** @type {{encoding?: string, sample_rate?: number, channels?: number}} */ (first.format);
      request.tail = AudioTail.forFormat(format, this._options.maxReplayBytes);
    }
    this._live.set(requestId, request);
    request.sendJson(first);
    this._place(request);
    return request;
  }

  /** Milliseconds between the client's pings where the WebSocket can ping (null: none). */
  get heartbeat() {
    return this._options.heartbeat;
  }

  /** Requests not yet ended (waiting for a socket or on one). */
  get inFlight() {
    return this._live.size;
  }

  /** @param {RequestHandle} request */
  _place(request) {
    const current = this._current;
    if (current !== null && current.usable) {
      current.assign(request);
      return;
    }
    request.socket = null;
    request.pendingSince = Date.now();
    this._pending.push(request);
    if (!this._dialing) void this._dial();
  }

  /**
   * A request queued payloads: send them if it is on an open socket.
   * @param {RequestHandle} request
   */
  kick(request) {
    if (request.socket instanceof Socket) request.socket.flush(request);
  }

  /**
   * The caller is done with a request: stop tracking it.
   * @param {RequestHandle} request
   */
  forget(request) {
    if (this._live.get(request.id) === request) this._live.delete(request.id);
    const at = this._pending.indexOf(request);
    if (at >= 0) this._pending.splice(at, 1);
    const socket = request.socket;
    if (socket instanceof Socket && socket.requests.get(request.id) === request) {
      socket.requests.delete(request.id);
      socket.closeIfIdle();
    }
  }

  /**
   * Put a request that received nothing on another socket, from its first message.
   * @param {RequestHandle} request
   */
  resend(request) {
    request.socket = null;
    if (request.sends >= this._options.maxSends) {
      this._lose(request, null, `the request was sent ${request.sends} times without answer`);
      return;
    }
    this._stats.resent += 1;
    request.rewind();
    this._place(request);
  }

  /**
   * Put a started request on another socket with `resume` after the last frame it saw.
   * @param {RequestHandle} request
   */
  _resume(request) {
    request.socket = null;
    if (request.sends >= this._options.maxSends) {
      this._lose(request, null, `the request was resumed ${request.sends - 1} times`);
      return;
    }
    this._stats.resumed += 1;
    request.resuming = true;
    request.prepend(JSON.stringify(resumeMessage(request.id, /** @type {number} */ (request.lastSeq))));
    this._place(request);
  }

  /**
   * The server could not resume a request (it does not know it, or has no resume).
   * @param {RequestHandle} request
   * @param {Record<string, any>} frame
   */
  resumeRefused(request, frame) {
    const name = frame.error?.name;
    this._stats.lost += 1;
    request.fail(
      new ConnectionLost(
        `${this.url}: the websocket was cut mid-stream and the server could not resume the request (${name}); send it again`,
        { requestId: request.id, frame },
      ),
    );
  }

  /**
   * @param {RequestHandle} request
   * @param {number | null} code
   * @param {string} why
   */
  _lose(request, code, why) {
    this._stats.lost += 1;
    request.fail(
      new ConnectionLost(`${this.url}: ${why}; the request did not finish (send it again)`, {
        requestId: request.id,
        retryable: code === null || !FATAL_CLOSE_CODES.has(code),
        closeCode: code,
      }),
    );
  }

  /**
   * Count a request's terminal frame.
   * @param {Record<string, any>} frame
   */
  onTerminal(frame) {
    if (frame.type === "error") this._stats.failed += 1;
    else this._stats.completed += 1;
  }

  /**
   * A socket delivered a frame: the endpoint is healthy, reset the backoff.
   * @param {Socket} _socket
   */
  socketWorked(_socket) {
    this._failures = 0;
  }

  /**
   * A socket takes no new requests: the next request opens a new one.
   * @param {Socket} socket
   */
  socketRetired(socket) {
    if (this._current === socket) this._current = null;
  }

  /**
   * A socket ended: resend requests that received nothing, resume or fail the others.
   * @param {Socket} socket
   */
  socketClosed(socket) {
    this._sockets.delete(socket);
    if (this._current === socket) this._current = null;
    this._stats.closes += 1;
    if (!socket.gotFrame) this._failures += 1;
    const code = socket.closeCode;
    const fatal = code !== null && FATAL_CLOSE_CODES.has(code);
    const requests = [...socket.requests.values()];
    socket.requests.clear();
    for (const request of requests) {
      if (request.ended) continue;
      if (this._closed) request.fail(new ClientClosed("the client was closed", { requestId: request.id }));
      else if (request.resendable && !fatal) this.resend(request);
      else if (!fatal && this._options.resume && request.lastSeq !== null) this._resume(request);
      else {
        const why =
          request.lastSeq === null
            ? `the websocket closed mid-stream (code ${code}) and the server's frames carry no seq to resume by`
            : `the websocket closed mid-stream (code ${code})`;
        this._lose(request, code, why);
      }
    }
  }

  async _dial() {
    this._dialing = true;
    try {
      while (this._pending.length > 0 && !this._closed) {
        const delay = backoffDelay(this._failures, this._options.backoff, this._options.random);
        if (delay > 0) await this._sleep(delay);
        this._expirePending();
        if (this._pending.length === 0 || this._closed) break;
        const ws = await this._connect();
        if (ws === null) continue;
        if (this._closed) {
          ws.close(1000);
          break;
        }
        const socket = new Socket(this, ws);
        this._sockets.add(socket);
        this._current = socket;
        const waiting = this._pending;
        this._pending = [];
        for (const request of waiting) if (!request.ended) socket.assign(request);
      }
    } finally {
      this._dialing = false;
    }
  }

  /** @param {number} ms */
  _sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this._sleepers.delete(wake);
        resolve(undefined);
      };
      const timer = setTimeout(wake, ms);
      this._sleepers.add(wake);
    });
  }

  /**
   * One handshake: the open websocket, or null (and a failure counted) when it did not work out.
   * @returns {Promise<WebSocket | null>}
   */
  _connect() {
    const { WebSocket: WS, protocols, headers, connectTimeout } = this._options;
    // resume=1 tells the server this client resumes: a draining server may close a busy socket with 1012 at once
    const url = this._options.resume ? `${this.url}${this.url.includes("?") ? "&" : "?"}resume=1` : this.url;
    return new Promise((resolve) => {
      /** @type {WebSocket} */
      let ws;
      try {
        ws = headers ? new WS(url, protocols, /** @type {any} */ ({ headers })) : new WS(url, protocols);
      } catch (error) {
        this._connectFailed(String(error), null);
        resolve(null);
        return;
      }
      ws.binaryType = "arraybuffer";
      let settled = false;
      /** @param {string | null} failure @param {number | null} status */
      const settle = (failure, status) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._sleepers.delete(abort);
        ws.onopen = ws.onerror = ws.onclose = null;
        if (failure === null) {
          this._stats.connects += 1;
          resolve(ws);
          return;
        }
        try {
          ws.close();
        } catch {
          // never opened
        }
        this._connectFailed(failure, status);
        resolve(null);
      };
      const abort = () => settle("the client was closed", null);
      const timer = setTimeout(() => settle(`no handshake within ${connectTimeout} ms`, null), connectTimeout);
      this._sleepers.add(abort);
      ws.onopen = () => settle(null, null);
      ws.onerror = (/** @type {any} */ event) => {
        const message = String(event?.message ?? event?.error?.message ?? "websocket error");
        const match = /Unexpected server response: (\d{3})/.exec(message);
        settle(message, match ? Number(match[1]) : null);
      };
      ws.onclose = (event) => settle(`closed during the handshake (code ${event.code})`, null);
    });
  }

  /**
   * @param {string} why
   * @param {number | null} status the HTTP status of a refused upgrade, where the runtime tells it
   */
  _connectFailed(why, status) {
    this._stats.connectFailures += 1;
    this._failures += 1;
    if (status !== null && status >= 400 && status < 500 && status !== 408 && status !== 429) {
      const waiting = this._pending;
      this._pending = [];
      for (const request of waiting) {
        request.fail(
          status === 404
            ? new RouterNotFound(`${this.url}: no such router or endpoint (HTTP 404)`, { requestId: request.id })
            : new ConnectFailed(`${this.url}: upgrade refused with HTTP ${status}`, {
                requestId: request.id,
                retryable: false,
                status,
              }),
        );
      }
    }
  }

  _expirePending() {
    const now = Date.now();
    const limit = this._options.pendingTimeout;
    const keep = [];
    for (const request of this._pending) {
      if (request.pendingSince !== null && now - request.pendingSince > limit) {
        request.fail(new ConnectFailed(`${this.url}: no connection within ${limit} ms`, { requestId: request.id }));
      } else {
        keep.push(request);
      }
    }
    this._pending = keep;
  }

  /** End every request with ClientClosed and close every socket. */
  close() {
    this._closed = true;
    for (const wake of [...this._sleepers]) wake();
    for (const request of this._pending) request.fail(new ClientClosed("the client was closed", { requestId: request.id }));
    this._pending = [];
    for (const socket of [...this._sockets]) {
      for (const request of socket.requests.values()) {
        request.fail(new ClientClosed("the client was closed", { requestId: request.id }));
      }
      socket.close(1000);
    }
  }
}
