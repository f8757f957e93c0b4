// PCM conversions shared by the microphone worklet, the player and Node:
// float samples <-> 16-bit little-endian PCM, and a streaming rate converter.

/**
 * Float samples in [-1, 1] -> 16-bit PCM samples (clipped).
 * @param {Float32Array} input
 * @returns {Int16Array}
 */
export function floatToPcm16(input) {
  const out = new Int16Array(input.length);
  for (let i = 0; i < input.length; i++) {
    const s = Math.max(-1, Math.min(1, input[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/**
 * 16-bit little-endian PCM bytes (an even count) -> float samples in [-1, 1).
 * @param {Uint8Array} bytes
 * @returns {Float32Array}
 */
export function pcm16ToFloat(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 0x8000;
  return out;
}

/** Fractional positions between two input samples the filter distinguishes. */
const PHASES = 256;

/**
 * Float samples at one rate in, float samples at another out, block after block, with
 * no seam between blocks: a windowed-sinc (Hann) interpolator whose cutoff sits just
 * below the lower of the two Nyquist frequencies, so downsampling a 48 kHz microphone
 * to 16 kHz does not fold its upper band into the speech. Each output sample is
 * normalised by its taps' sum (a constant stays exactly that constant). Output k sits
 * at input k * step; it comes out once `delay` input samples past it have arrived
 * (the filter's half width: 0.4 ms at 48 kHz), and the first outputs read a silent past.
 */
export class RateConverter {
  /**
   * @param {number} inputRate
   * @param {number} outputRate
   * @param {number} [zeroCrossings] sinc lobes on each side (filter length and sharpness)
   */
  constructor(inputRate, outputRate, zeroCrossings = 8) {
    if (!(inputRate > 0 && outputRate > 0)) throw new RangeError("sample rates must be positive");
    /** Input samples per output sample. */
    this.step = inputRate / outputRate;
    /** The cutoff as a fraction of the input rate (0.5 is the input's Nyquist). */
    this._cutoff = Math.min(0.5, 0.5 / this.step) * 0.94;
    /** Input samples on each side of an output sample that the filter reads (its latency). */
    this.delay = Math.ceil(zeroCrossings / (2 * this._cutoff));
    /** Input kept from earlier blocks, starting `delay` zeros back (a silent past). */
    this._history = new Float32Array(this.delay);
    /** The next output's position in `_history` coordinates. */
    this._position = this.delay;
    /** @type {Map<number, Float32Array>} the filter's taps per fractional phase */
    this._kernels = new Map();
  }

  /**
   * The 2 * delay taps for an output `phase / PHASES` of a sample past an input sample.
   * @param {number} phase
   */
  _taps(phase) {
    let taps = this._kernels.get(phase);
    if (taps === undefined) {
      const half = this.delay;
      const twoFc = 2 * this._cutoff;
      taps = new Float32Array(2 * half);
      for (let t = 0; t < taps.length; t++) {
        const x = t - half + 1 - phase / PHASES; // input sample minus output position
        const arg = Math.PI * twoFc * x;
        const sinc = arg === 0 ? 1 : Math.sin(arg) / arg;
        taps[t] = Math.abs(x) >= half ? 0 : sinc * (0.5 + 0.5 * Math.cos((Math.PI * x) / half));
      }
      this._kernels.set(phase, taps);
    }
    return taps;
  }

  /**
   * One block of input samples -> the output samples it completes.
   * @param {Float32Array} input
   * @returns {Float32Array}
   */
  push(input) {
    if (this.step === 1) return input.slice();
    const buffer = new Float32Array(this._history.length + input.length);
    buffer.set(this._history);
    buffer.set(input, this._history.length);
    const half = this.delay;
    const out = new Float32Array(Math.ceil(input.length / this.step) + 2);
    let n = 0;
    let position = this._position;
    while (Math.floor(position) + half + 1 < buffer.length) {
      let center = Math.floor(position);
      let phase = Math.round((position - center) * PHASES);
      if (phase === PHASES) {
        center += 1;
        phase = 0;
      }
      const taps = this._taps(phase);
      const first = center - half + 1;
      let sum = 0;
      let weights = 0;
      for (let t = first < 0 ? -first : 0; t < taps.length; t++) {
        sum += buffer[first + t] * taps[t];
        weights += taps[t];
      }
      out[n++] = sum / weights;
      position += this.step;
    }
    const drop = Math.max(0, Math.floor(position) - half);
    this._history = buffer.slice(drop);
    this._position = position - drop;
    return out.subarray(0, n);
  }
}
