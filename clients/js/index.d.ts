// Type declarations of sluice-client (hand-written; checked by `tsc --noEmit` in the tests).

/** The `format` object of a speak or listen request. */
export interface AudioFormat {
  /** pcm_s16le, wav, flac, ogg_opus or mp3 */
  encoding: string;
  sample_rate: number;
  channels: number;
}

/** Build an AudioFormat (defaults: pcm_s16le, 16000 Hz, mono). */
export function audioFormat(encoding?: string, sampleRate?: number, channels?: number): AudioFormat;

/** Delays between connect attempts after consecutive failures, in seconds. */
export interface Backoff {
  initial: number;
  maximum: number;
  multiplier: number;
  /** 0: exactly the exponential delay; 1: anywhere between 0 and it ("full jitter"). */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<Backoff>;

/** Milliseconds to wait before a connect attempt after `attempt` consecutive failures. */
export function backoffDelay(attempt: number, backoff: Backoff, random?: () => number): number;

/** A WebSocket constructor: the browser's, Node 22's global one, or the `ws` package's. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string> },
) => WebSocket;

/** How a SluiceClient connects, reconnects, resends and resumes. */
export interface ClientOptions {
  /** The WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor | typeof WebSocket;
  /** An API key, offered as the `sluice.auth.<key>` subprotocol (works in browsers). */
  apiKey?: string;
  /** Headers on every upgrade (Node's `ws` only; browsers cannot set them). */
  headers?: Record<string, string>;
  backoff?: Partial<Backoff>;
  /** Milliseconds one handshake may take (default 10 000). */
  connectTimeout?: number;
  /** Milliseconds a request may wait for a usable socket before ConnectFailed (default 30 000). */
  pendingTimeout?: number;
  /** Sockets one request may be put on: the first send, resends and resumes (default 10). */
  maxSends?: number;
  /** Input kept per request for a transparent resend (default 8 MiB). */
  maxReplayBytes?: number;
  /** Resume started requests by `seq` after a reconnect where the server numbers frames (default true). */
  resume?: boolean;
  /**
   * Milliseconds between pings where the WebSocket can send them (Node's `ws`; browsers
   * cannot): a socket whose pong is missing by the next ping is cut (default 20 000; null: off).
   */
  heartbeat?: number | null;
  /** A uniform [0, 1) source for the jitter (default Math.random). */
  random?: () => number;
}

/** Counters of one client (all endpoints); they only grow. */
export interface ClientStats {
  connects: number;
  connectFailures: number;
  closes: number;
  resent: number;
  resumed: number;
  lost: number;
  completed: number;
  failed: number;
}

interface RequestOptions {
  /** Echoed by the server on every frame of the request. */
  metadata?: unknown;
  /** Default: a random UUID (hex). */
  requestId?: string;
  /** Aborting sends `cancel` and makes the iteration throw the signal's reason. */
  signal?: AbortSignal;
}

export interface ChatMessage {
  role: string;
  content: unknown;
  [key: string]: unknown;
}

export interface ChatOptions extends RequestOptions {
  messageHistory?: ChatMessage[];
  /** Per model id, e.g. { "gpt-4o": { max_tokens: 64 } }. */
  overrideParams?: Record<string, unknown>;
  /** Tools the model may call (OpenAI's shape: {type: "function", function: {name, description?, parameters?}}). */
  tools?: Record<string, unknown>[];
  /** "auto", "none", "required" or {type: "function", function: {name}} (OpenAI's shape). */
  toolChoice?: string | Record<string, unknown>;
}

export interface ConverseOptions extends RequestOptions {
  /** The user's audio (default pcm_s16le 16 kHz mono; or streamed wav). */
  format?: AudioFormat;
  /** Reply audio rate (PCM16 mono; default: the speak router's format). */
  outputSampleRate?: number;
  /** Override the agent's instructions, voice, turn detection, language hint, interim results. */
  instructions?: string;
  voice?: string;
  turnDetection?: boolean;
  language?: string;
  interimResults?: boolean;
  /** Tools the agent's model may call (OpenAI's shape); calls come as ToolCalls events. */
  tools?: Record<string, unknown>[];
  /** "auto", "none", "required" or {type: "function", function: {name}}. */
  toolChoice?: string | Record<string, unknown>;
}

/** Events of a conversation (reply audio comes as Uint8Array beside them). */
export type ConverseEvent =
  | SpeechStarted
  | SpeechEnded
  | Transcript
  | UserTurn
  | ReplyStarted
  | ReplyText
  | ToolCalls
  | SpeakSegment
  | ReplyInterrupted
  | TurnEnded
  | ModelReset
  | Notice
  | Done
  | Event;

/** One conversation on an agent router: send the user's side, iterate the agent's. */
export class Conversation implements AsyncIterable<Uint8Array | ConverseEvent> {
  readonly requestId: string;
  /** Whether the terminal frame or error came, or the conversation was cancelled. */
  readonly ended: boolean;
  /** The user's audio in the conversation's format, any chunk size. */
  sendAudio(audio: AudioChunk): void;
  /** ms of the reply audio played so far (from the first reply byte, across turns, without dropped audio). */
  played(ms: number): void;
  /** A typed user turn (answered at once unless respond is false). */
  text(text: string, options?: { respond?: boolean }): void;
  /** Stop the running reply, as a barge-in would. */
  interrupt(): void;
  /** Settings for later turns. */
  update(settings: {
    instructions?: string;
    voice?: string;
    turnDetection?: boolean;
    tools?: Record<string, unknown>[];
    toolChoice?: string | Record<string, unknown>;
  }): void;
  /** The output of a call of the last reply's ToolCalls; the reply to them starts when all have one (unless respond is false). */
  toolResult(callId: string, output: string, options?: { respond?: boolean }): void;
  /** Turn detection off: the audio since the last commit is one user turn. */
  commit(): void;
  /** Turn detection off: drop the audio since the last commit. */
  clear(): void;
  /** Reply now to the history. */
  respond(options?: { instructions?: string }): void;
  /** The input is over: the open segment is answered, then Done. */
  end(): void;
  /** End at once; the iteration throws `reason` (default Cancelled). */
  cancel(reason?: unknown): void;
  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array | ConverseEvent, void, undefined>;
}

export interface SpeakOptions extends RequestOptions {
  format?: AudioFormat;
  voice?: string;
}

export interface ListenOptions extends RequestOptions {
  format: AudioFormat;
  language?: string;
  interimResults?: boolean;
  /** Overrides of the router's VAD settings. */
  vad?: Record<string, unknown>;
}

export type AudioChunk = ArrayBuffer | ArrayBufferView;

/** A client of one Sluice deployment (an instance, or a load balancer in front of many). */
export class SluiceClient {
  constructor(baseUrl: string, options?: ClientOptions);
  readonly baseUrl: string;
  readonly stats: ClientStats;
  /** Stream one chat answer: ChatChunk (the last has finishReason) and ModelReset events. */
  chatStream(router: string, message: string | ChatMessage, options?: ChatOptions): AsyncGenerator<ChatEvent, void, undefined>;
  /** The whole answer's text, resets applied. */
  chatText(router: string, message: string | ChatMessage, options?: ChatOptions): Promise<string>;
  /** Synthesize text (or streamed pieces): audio as Uint8Array, SpeakSegment, ModelReset, then Done. */
  speak(
    router: string,
    text: string | AsyncIterable<string> | Iterable<string>,
    options?: SpeakOptions,
  ): AsyncGenerator<Uint8Array | SpeakEvent, void, undefined>;
  /** The whole audio of `text`, resets applied. */
  speakBytes(router: string, text: string | AsyncIterable<string> | Iterable<string>, options?: SpeakOptions): Promise<Uint8Array>;
  /** Transcribe audio as it arrives: SpeechStarted, Transcript, SpeechEnded, then Done. */
  listen(router: string, audio: AsyncIterable<AudioChunk> | Iterable<AudioChunk>, options: ListenOptions): AsyncGenerator<ListenEvent, void, undefined>;
  /** The final transcripts of a whole recording. */
  listenBytes(router: string, audio: AudioChunk, options: ListenOptions & { chunkBytes?: number }): Promise<Transcript[]>;
  /** Start a conversation with an agent router: sendAudio etc. in, iterate for events and reply audio. */
  converse(router: string, options?: ConverseOptions): Conversation;
  /** Close every socket; requests in flight end with ClientClosed. */
  close(): void;
}

export type Frame = Record<string, any>;

/** A frame of a type this client does not model. */
export class Event {
  constructor(requestId: string, type: string, frame: Frame);
  readonly requestId: string;
  readonly type: string;
  /** The whole server frame. */
  readonly frame: Frame;
  /** The request's metadata, echoed. */
  readonly metadata: unknown;
  /** The server's number of this frame within its request (null where it sends none). */
  readonly seq: number | null;
}

export class ChatChunk extends Event {
  readonly content: string;
  readonly modelId: string | null;
  readonly providerId: string | null;
  readonly modelName: string | null;
  /** Set on the last chunk only (complete, max_tokens, ...; `other` when the model called tools). */
  readonly finishReason: string | null;
  /** The tool calls this chunk carries (OpenAI's shape with `index`: {index, id, type, function: {name, arguments}}). */
  readonly toolCalls: Record<string, any>[];
  /** "tool_calls" on the last chunk of an answer that stopped to call tools. */
  readonly finishDetail: string | null;
}

/** A model failed mid-answer: drop the partial output (chat: the text; speak: dropBytes). */
export class ModelReset extends Event {
  readonly modelId: string | null;
  readonly message: string;
  readonly segment: unknown;
  readonly dropBytes: number | null;
}

/** A non-terminal error other than a reset. */
export class Notice extends Event {
  readonly name: string;
  readonly message: string;
}

export class SpeakSegment extends Event {
  /** The segment object (the `segment` field, or the frame itself). */
  readonly data: Frame;
  /** Converse: the turn of the sentence (null on speak). */
  readonly turnId: number | null;
  /** Converse: where the sentence starts in the reply audio, ms (null on speak). */
  readonly startMs: number | null;
}

/** Converse: the user's turn is complete. */
export class UserTurn extends Event {
  readonly turnId: number | null;
  readonly text: string;
}

/** Converse: the chat router is asked. */
export class ReplyStarted extends Event {
  readonly turnId: number | null;
}

/** Converse: a piece of the reply's text. */
export class ReplyText extends Event {
  readonly turnId: number | null;
  readonly delta: string;
  readonly modelId: string | null;
  readonly providerId: string | null;
}

/** Converse: the reply calls tools: every call whole ({id, type, function: {name, arguments}}). */
export class ToolCalls extends Event {
  readonly turnId: number | null;
  readonly calls: Record<string, any>[];
  readonly modelId: string | null;
  readonly providerId: string | null;
}

/** Converse: the reply stopped (barge_in / cancelled): stop playback, drop reply audio after keptBytes. */
export class ReplyInterrupted extends Event {
  readonly turnId: number | null;
  readonly reason: string;
  readonly keptMs: number | null;
  readonly sentMs: number | null;
  readonly keptBytes: number | null;
  readonly sentBytes: number | null;
  /** What the history keeps of the reply. */
  readonly text: string;
}

/** Converse: the turn is over (complete / interrupted / error). */
export class TurnEnded extends Event {
  readonly turnId: number | null;
  readonly reason: string;
  readonly userText: string;
  readonly replyText: string;
  readonly error: { name: string; message: string } | null;
}

export class Transcript extends Event {
  readonly text: string;
  readonly isFinal: boolean;
  readonly segmentId: unknown;
  readonly startMs: number | null;
  readonly endMs: number | null;
  readonly providerId: string | null;
  readonly modelId: string | null;
}

export class SpeechStarted extends Event {}
export class SpeechEnded extends Event {}

/** Speak / listen / converse: the request ended normally. */
export class Done extends Event {
  readonly finishReason: string;
  /** Converse: {turns, audio_in_ms, audio_out_ms}. */
  readonly usage: Record<string, any> | null;
}

export type ChatEvent = ChatChunk | ModelReset | Notice | Event;
export type SpeakEvent = SpeakSegment | ModelReset | Notice | Done | Event;
export type ListenEvent = SpeechStarted | Transcript | SpeechEnded | Notice | Done | Event;

/** A server frame that is not a terminal error -> its event. */
export function parseEvent(requestId: string, frame: Frame): Event;

export interface ErrorDetails {
  name?: string;
  requestId?: string | null;
  retryable?: boolean;
  frame?: Frame | null;
}

/** A request (or the connection under it) ended in failure. */
export class SluiceError extends Error {
  static readonly NAME: string;
  static readonly RETRYABLE: boolean;
  constructor(message: string, details?: ErrorDetails);
  /** The wire error name, e.g. all_models_unavailable. (`name` is the class name.) */
  readonly errorName: string;
  readonly requestId: string | null;
  /** Whether sending the request again (with a new request id) may succeed. */
  readonly retryable: boolean;
  /** The server frame that carried it (null when the client raised it). */
  readonly frame: Frame | null;
}
export class AllModelsUnavailable extends SluiceError {}
export class ShuttingDown extends SluiceError {}
export class Cancelled extends SluiceError {}
export class BadRequest extends SluiceError {}
export class TooManyRequests extends SluiceError {}
export class SlowConsumer extends SluiceError {}
export class RouterNotFound extends SluiceError {}
export class ClientClosed extends SluiceError {}
/** The socket was cut under a started request that could not be resumed. */
export class ConnectionLost extends SluiceError {
  constructor(message: string, details?: ErrorDetails & { closeCode?: number | null });
  readonly closeCode: number | null;
}
/** No socket could be opened in time, or the upgrade was refused for good. */
export class ConnectFailed extends SluiceError {
  constructor(message: string, details?: ErrorDetails & { status?: number | null });
  readonly status: number | null;
}

/** Wire error name -> the class thrown for it. */
export const ERRORS_BY_NAME: Readonly<Record<string, typeof SluiceError>>;
/** A terminal error frame -> its typed error. */
export function errorFromWire(frame: Frame): SluiceError;

/** (request id, audio) -> one binary frame. */
export function encodeAudio(requestId: string, audio: AudioChunk): Uint8Array;
/** One binary frame -> [request id, audio], or null when malformed. */
export function decodeAudio(data: AudioChunk): [string, Uint8Array] | null;
/** A text frame -> its finish_reason if terminal, else null. */
export function finishReason(frame: Frame): string | null;
