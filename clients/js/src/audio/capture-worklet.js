// AudioWorklet processor "sluice-pcm-capture": the microphone's float samples at the
// context's rate in; 16-bit PCM frames at the requested rate out (posted to the node's
// port as transferable ArrayBuffers of `frameMs` each). Loaded by microphone.js.
/* global registerProcessor, AudioWorkletProcessor, sampleRate */

import { RateConverter, floatToPcm16 } from "./pcm.js";

class PcmCapture extends AudioWorkletProcessor {
  /** @param {{processorOptions: {sampleRate: number, frameMs: number}}} options */
  constructor(options) {
    super();
    const { sampleRate: target, frameMs } = options.processorOptions;
    this.converter = new RateConverter(sampleRate, target);
    this.frameSamples = Math.max(1, Math.round((target * frameMs) / 1000));
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  /** @param {Float32Array[][]} inputs */
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      const pcm = floatToPcm16(this.converter.push(channel));
      let at = 0;
      while (at < pcm.length) {
        const take = Math.min(pcm.length - at, this.frame.length - this.filled);
        this.frame.set(pcm.subarray(at, at + take), this.filled);
        this.filled += take;
        at += take;
        if (this.filled === this.frame.length) {
          const buffer = this.frame.buffer;
          this.port.postMessage(buffer, [buffer]);
          this.frame = new Int16Array(this.frameSamples); // the old one went with its buffer
          this.filled = 0;
        }
      }
    }
    return this.running;
  }
}

registerProcessor("sluice-pcm-capture", PcmCapture);
