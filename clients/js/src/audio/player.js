// Gapless playback of speak audio (16-bit PCM) in browsers, with stop() for barge-in.
//
// bytes from SluiceClient.speak -> push() -> AudioBuffers scheduled back to back on
// one AudioContext clock (sample-exact, no gaps between chunks) -> speakers;
// stop() silences everything scheduled at once; drop() unschedules a reset's tail.

import { ModelReset } from "../events.js";
import { pcm16ToFloat } from "./pcm.js";

/** Plays mono PCM16 chunks as they arrive, gaplessly. */
export class PcmPlayer {
  /** @param {import("../../audio.js").PlayerOptions} [options] */
  constructor(options = {}) {
    /** The rate of the PCM pushed (the speak request's format.sample_rate). */
    this.sampleRate = options.sampleRate ?? 24000;
    this._ownContext = options.context === undefined;
    /** The AudioContext playing (its own unless one was given). */
    this.context = options.context ?? new AudioContext({ sampleRate: this.sampleRate });
    this._lead = (options.leadMs ?? 50) / 1000;
    this._playhead = 0;
    /** @type {Uint8Array | null} */
    this._carry = null;
    /** @type {{node: AudioBufferSourceNode, start: number, bytes: number}[]} */
    this._scheduled = [];
    /** Audio bytes pushed since the player was made. */
    this.bytesPushed = 0;
    /** Seconds of audio scheduled since the player was made, less what was dropped or stopped unplayed. */
    this._kept = 0;
  }

  /**
   * Seconds of audio played so far by the AudioContext clock (what was dropped or stopped
   * before it played does not count): a conversation's `played` report is this in ms.
   */
  get playedSeconds() {
    return Math.max(0, this._kept - this.bufferedSeconds);
  }

  /** Seconds of audio scheduled but not yet played. */
  get bufferedSeconds() {
    return Math.max(0, this._playhead - this.context.currentTime);
  }

  /** Whether anything is playing or scheduled. */
  get playing() {
    return this.bufferedSeconds > 0;
  }

  /**
   * Queue a chunk of PCM16 audio right after what is already scheduled.
   * @param {Uint8Array} bytes
   */
  push(bytes) {
    this.bytesPushed += bytes.length;
    let data = bytes;
    if (this._carry !== null) {
      data = new Uint8Array(this._carry.length + bytes.length);
      data.set(this._carry);
      data.set(bytes, this._carry.length);
      this._carry = null;
    }
    if (data.length % 2) {
      this._carry = data.slice(data.length - 1);
      data = data.subarray(0, data.length - 1);
    }
    if (data.length === 0) return;
    const samples = pcm16ToFloat(data);
    const buffer = this.context.createBuffer(1, samples.length, this.sampleRate);
    buffer.getChannelData(0).set(samples);
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.context.destination);
    const now = this.context.currentTime;
    const start = this._playhead > now ? this._playhead : now + this._lead;
    node.start(start);
    this._playhead = start + buffer.duration;
    this._kept += buffer.duration;
    const entry = { node, start, bytes: data.length };
    this._scheduled.push(entry);
    node.onended = () => {
      const at = this._scheduled.indexOf(entry);
      if (at >= 0) this._scheduled.splice(at, 1);
    };
  }

  /**
   * Unschedule up to `bytes` of the most recent audio that has not started playing (what a
   * speak ModelReset's dropBytes asks); audio already playing is not taken back.
   * @param {number} bytes
   */
  drop(bytes) {
    let left = bytes;
    this._carry = null;
    const now = this.context.currentTime;
    while (left > 0 && this._scheduled.length > 0) {
      const last = this._scheduled[this._scheduled.length - 1];
      if (last.start <= now || last.bytes > left) break;
      this._scheduled.pop();
      last.node.onended = null;
      last.node.stop();
      left -= last.bytes;
      this._kept -= this._playhead - last.start;
      this._playhead = last.start;
    }
  }

  /** Silence at once: everything playing or scheduled stops (barge-in). */
  stop() {
    this._kept = this.playedSeconds;
    for (const { node } of this._scheduled) {
      node.onended = null;
      try {
        node.stop();
      } catch {
        // never started
      }
      node.disconnect();
    }
    this._scheduled = [];
    this._carry = null;
    this._playhead = 0;
  }

  /**
   * Play what SluiceClient.speak yields: audio is pushed, a ModelReset's dropBytes are
   * dropped, other events are passed to `onEvent`. Resolves when the stream ends.
   * @param {AsyncIterable<Uint8Array | import("../events.js").Event>} items
   * @param {(event: import("../events.js").Event) => void} [onEvent]
   */
  async play(items, onEvent) {
    if (this.context.state === "suspended") await this.context.resume();
    for await (const item of items) {
      if (item instanceof Uint8Array) this.push(item);
      else {
        if (item instanceof ModelReset && item.dropBytes) this.drop(item.dropBytes);
        onEvent?.(item);
      }
    }
  }

  /** Stop, and close the AudioContext if the player made it. */
  async close() {
    this.stop();
    if (this._ownContext) await this.context.close();
  }
}
