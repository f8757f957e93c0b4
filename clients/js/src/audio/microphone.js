// Microphone capture for listen: getUserMedia (no echo cancellation, noise suppression
// or gain control: they reshape speech in ways that hurt recognition) -> AudioWorklet
// (capture-worklet.js) -> 16-bit PCM frames at the requested rate -> an async iterable
// that `SluiceClient.listen` sends as it arrives. Browsers only; no bundler needed.

import { audioFormat } from "../messages.js";

/** The worklet module, beside this file (served with the package's other files). */
const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url);

/** Constraints for raw speech: the browser's processing off, one channel. */
export const RAW_SPEECH = Object.freeze({
  echoCancellation: false,
  noiseSuppression: false,
  autoGainControl: false,
  channelCount: 1,
});

/**
 * Open the microphone: options in, a Microphone (an async iterable of PCM16 frames) out.
 * @param {import("../../audio.js").MicrophoneOptions} [options]
 * @returns {Promise<Microphone>}
 */
export async function startMicrophone(options = {}) {
  const frameMs = options.frameMs ?? 20;
  const ownStream = options.stream === undefined;
  const stream =
    options.stream ?? (await navigator.mediaDevices.getUserMedia({ audio: { ...RAW_SPEECH, ...options.constraints } }));
  const ownContext = options.context === undefined;
  // at the device's own rate, so the only conversion is the worklet's (one filter, not two)
  const deviceRate = stream.getAudioTracks()[0]?.getSettings().sampleRate;
  const context = options.context ?? new AudioContext(deviceRate ? { sampleRate: deviceRate } : {});
  const sampleRate = options.sampleRate === "device" ? context.sampleRate : (options.sampleRate ?? 16000);
  try {
    await context.audioWorklet.addModule(options.workletUrl ?? WORKLET_URL);
    if (context.state === "suspended") await context.resume();
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "sluice-pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { sampleRate, frameMs },
    });
    // a silent path to the destination keeps the graph pulling the worklet
    const mute = context.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(context.destination);
    return new Microphone({ stream, context, source, node, mute, ownStream, ownContext, sampleRate });
  } catch (error) {
    if (ownStream) stream.getTracks().forEach((track) => track.stop());
    if (ownContext) await context.close();
    throw error;
  }
}

/** An open microphone: iterate it for PCM16 frames; stop() ends the iteration. */
export class Microphone {
  /** @param {any} parts */
  constructor(parts) {
    this._parts = parts;
    /** The `format` of a listen request fed by this microphone. */
    this.format = audioFormat("pcm_s16le", parts.sampleRate, 1);
    /** The AudioContext capturing (its own unless one was given). */
    this.context = parts.context;
    /** @type {Uint8Array[]} */
    this._frames = [];
    /** @type {((result: IteratorResult<Uint8Array>) => void) | null} */
    this._waiter = null;
    this.stopped = false;
    parts.node.port.onmessage = (/** @type {MessageEvent<ArrayBuffer>} */ event) => this._push(new Uint8Array(event.data));
  }

  /** @param {Uint8Array} frame */
  _push(frame) {
    if (this.stopped) return;
    const waiter = this._waiter;
    if (waiter !== null) {
      this._waiter = null;
      waiter({ value: frame, done: false });
    } else {
      this._frames.push(frame);
    }
  }

  /** Stop capturing: frames already captured are still yielded, then the iteration ends. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    const { stream, context, source, node, mute, ownStream, ownContext } = this._parts;
    node.port.postMessage("stop");
    node.port.onmessage = null;
    source.disconnect();
    node.disconnect();
    mute.disconnect();
    if (ownStream) stream.getTracks().forEach((/** @type {MediaStreamTrack} */ track) => track.stop());
    const waiter = this._waiter;
    this._waiter = null;
    if (waiter !== null) waiter({ value: undefined, done: true });
    if (ownContext) await context.close();
  }

  /** @returns {AsyncIterator<Uint8Array>} */
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        const frame = this._frames.shift();
        if (frame !== undefined) return Promise.resolve({ value: frame, done: false });
        if (this.stopped) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this._waiter = resolve;
        });
      },
      return: async () => {
        await this.stop();
        return { value: undefined, done: true };
      },
    };
  }
}
