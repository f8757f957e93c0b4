// sluice-client: the JavaScript client of Sluice's websockets (chat, speak, listen, converse).
// Plain ES modules, no runtime dependencies; browsers and Node 20+.
// Browser audio helpers (microphone capture, gapless playback) are in "sluice-client/audio".

export { SluiceClient } from "./client.js";
export { Conversation } from "./conversation.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export {
  AllModelsUnavailable,
  BadRequest,
  Cancelled,
  ClientClosed,
  ConnectFailed,
  ConnectionLost,
  ERRORS_BY_NAME,
  errorFromWire,
  RouterNotFound,
  ShuttingDown,
  SlowConsumer,
  SluiceError,
  TooManyRequests,
} from "./errors.js";
export {
  ChatChunk,
  Done,
  Event,
  ModelReset,
  Notice,
  parseEvent,
  ReplyInterrupted,
  ReplyStarted,
  ReplyText,
  SpeakSegment,
  SpeechEnded,
  SpeechStarted,
  ToolCalls,
  Transcript,
  TurnEnded,
  UserTurn,
} from "./events.js";
export { decodeAudio, encodeAudio, finishReason } from "./framing.js";
export { audioFormat } from "./messages.js";
