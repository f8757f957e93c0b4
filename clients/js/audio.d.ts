// Type declarations of sluice-client/audio (browser audio helpers).
import type { AudioFormat, Event } from "./index.js";

export interface MicrophoneOptions {
  /**
   * The rate of the PCM16 frames produced (default 16000; the worklet converts), or
   * "device": the microphone's own rate, unconverted (the gateway resamples with soxr).
   */
  sampleRate?: number | "device";
  /** Milliseconds of audio per frame (default 20). */
  frameMs?: number;
  /** A stream to capture instead of asking getUserMedia (it is not stopped by stop()). */
  stream?: MediaStream;
  /** An AudioContext to use (it is not closed by stop()). */
  context?: AudioContext;
  /** Extra getUserMedia audio constraints (echo cancellation, noise suppression, gain control stay off unless set). */
  constraints?: MediaTrackConstraints;
  /** Where capture-worklet.js is served, if not beside microphone.js. */
  workletUrl?: string | URL;
}

/** Raw speech: the browser's processing off, one channel. */
export const RAW_SPEECH: Readonly<MediaTrackConstraints>;

/** Open the microphone: PCM16 frames at the requested rate. */
export function startMicrophone(options?: MicrophoneOptions): Promise<Microphone>;

/** An open microphone: an async iterable of PCM16 little-endian frames, until stop(). */
export class Microphone implements AsyncIterable<Uint8Array> {
  /** The listen request's format for these frames. */
  readonly format: AudioFormat;
  readonly context: AudioContext;
  readonly stopped: boolean;
  /** Stop capturing; frames already captured are still yielded, then the iteration ends. */
  stop(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
}

export interface PlayerOptions {
  /** The rate of the PCM pushed (default 24000). */
  sampleRate?: number;
  /** An AudioContext to play on (it is not closed by close()). */
  context?: AudioContext;
  /** Milliseconds of lead before the first chunk after a pause (default 50). */
  leadMs?: number;
}

/** Gapless playback of mono PCM16 chunks, with stop() for barge-in. */
export class PcmPlayer {
  constructor(options?: PlayerOptions);
  readonly sampleRate: number;
  readonly context: AudioContext;
  readonly bytesPushed: number;
  /** Seconds scheduled but not yet played. */
  readonly bufferedSeconds: number;
  /** Seconds played by the AudioContext clock, without what was dropped or stopped unplayed (a converse `played` report in ms). */
  readonly playedSeconds: number;
  readonly playing: boolean;
  /** Queue a chunk right after what is already scheduled. */
  push(bytes: Uint8Array): void;
  /** Unschedule up to `bytes` of the latest audio not yet playing (a speak ModelReset's dropBytes). */
  drop(bytes: number): void;
  /** Silence at once. */
  stop(): void;
  /** Play what SluiceClient.speak yields; other events go to onEvent. */
  play(items: AsyncIterable<Uint8Array | Event>, onEvent?: (event: Event) => void): Promise<void>;
  /** Stop, and close the AudioContext if the player made it. */
  close(): Promise<void>;
}

/** Float samples in [-1, 1] -> PCM16 samples. */
export function floatToPcm16(input: Float32Array): Int16Array;
/** PCM16 little-endian bytes -> float samples. */
export function pcm16ToFloat(bytes: Uint8Array): Float32Array;

/** Streaming sample-rate conversion, block after block without seams. */
export class RateConverter {
  constructor(inputRate: number, outputRate: number);
  readonly step: number;
  push(input: Float32Array): Float32Array;
}
