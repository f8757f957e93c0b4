// Typed errors the client throws: one SluiceError subclass per wire error name.
//
// A terminal `error` frame {"error": {"name", "message", "finish_reason"}} ->
// errorFromWire(frame) -> the subclass registered for that name (unknown names become
// a plain SluiceError). Every error says whether sending the request again (with a new
// request_id) may succeed: `retryable`. Names follow the Python client's.

import { isObject } from "./framing.js";

/** A request (or the connection under it) ended in failure. */
export class SluiceError extends Error {
  static NAME = "unknown_error";
  static RETRYABLE = false;

  /**
   * @param {string} message
   * @param {{name?: string, requestId?: string | null, retryable?: boolean, frame?: Record<string, any> | null}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    const cls = /** @type {typeof SluiceError} */ (this.constructor);
    /** The wire error name (e.g. all_models_unavailable). */
    this.errorName = details.name ?? cls.NAME;
    /** The request it ended (null for a connection-level failure). */
    this.requestId = details.requestId ?? null;
    /** Whether a new attempt may succeed. */
    this.retryable = details.retryable ?? cls.RETRYABLE;
    /** The server frame that carried it (null when the client raised it). */
    this.frame = details.frame ?? null;
  }

  get name() {
    return this.constructor.name;
  }
}

/** Every model of the router failed this request; a later attempt may find one healthy. */
export class AllModelsUnavailable extends SluiceError {
  static NAME = "all_models_unavailable";
  static RETRYABLE = true;
}

/** The instance ended the request because it is draining; retry on a new connection. */
export class ShuttingDown extends SluiceError {
  static NAME = "shutting_down";
  static RETRYABLE = true;
}

/** The request was cancelled (by the server; an AbortSignal throws its own reason). */
export class Cancelled extends SluiceError {
  static NAME = "cancelled";
}

/** The server or the provider rejected the request's content; do not resend it as is. */
export class BadRequest extends SluiceError {
  static NAME = "bad_request";
}

/** The socket's limit of requests in flight was reached; retry later. */
export class TooManyRequests extends SluiceError {
  static NAME = "too_many_requests";
  static RETRYABLE = true;
}

/** The server's outbound queue for this socket overflowed. */
export class SlowConsumer extends SluiceError {
  static NAME = "slow_consumer";
  static RETRYABLE = true;
}

/** The router (or the endpoint of a speech router) does not exist on the server. */
export class RouterNotFound extends SluiceError {
  static NAME = "router_not_found";
}

/**
 * The websocket closed under a request that had already received frames, and the
 * request could not be resumed. `closeCode` is the close code (1006 for a cut).
 */
export class ConnectionLost extends SluiceError {
  static NAME = "connection_lost";
  static RETRYABLE = true;

  /**
   * @param {string} message
   * @param {{requestId?: string | null, retryable?: boolean, closeCode?: number | null, frame?: Record<string, any> | null}} [details]
   */
  constructor(message, details = {}) {
    super(message, details);
    this.closeCode = details.closeCode ?? null;
  }
}

/** No websocket could be opened for the request in time (or the server refused for good). */
export class ConnectFailed extends SluiceError {
  static NAME = "connect_failed";
  static RETRYABLE = true;

  /**
   * @param {string} message
   * @param {{requestId?: string | null, retryable?: boolean, status?: number | null}} [details]
   */
  constructor(message, details = {}) {
    super(message, details);
    this.status = details.status ?? null;
  }
}

/** The client was closed while the request was in flight. */
export class ClientClosed extends SluiceError {
  static NAME = "client_closed";
}

/** Wire error name -> the class thrown for it. */
export const ERRORS_BY_NAME = Object.freeze({
  all_models_unavailable: AllModelsUnavailable,
  shutting_down: ShuttingDown,
  cancelled: Cancelled,
  bad_request: BadRequest,
  payload_parse_error: BadRequest,
  invalid_request: BadRequest,
  unsupported_message_type: BadRequest,
  duplicate_request_id: BadRequest,
  too_many_requests: TooManyRequests,
  slow_consumer: SlowConsumer,
  router_not_found: RouterNotFound,
});

/**
 * A terminal `error` frame -> the typed error for its `error.name`.
 * @param {Record<string, any>} frame
 * @returns {SluiceError}
 */
export function errorFromWire(frame) {
  const error = isObject(frame.error) ? frame.error : {};
  const name = String(error.name || "unknown_error");
  const message = String(error.message || name);
  const Cls = Object.hasOwn(ERRORS_BY_NAME, name)
    ? ERRORS_BY_NAME[/** @type {keyof typeof ERRORS_BY_NAME} */ (name)]
    : SluiceError;
  const requestId = typeof frame.request_id === "string" ? frame.request_id : null;
  return new Cls(message, { name, requestId, frame });
}
