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

/**
 * Float samples at one rate in, float samples at another out, block after block, with
 * no seam between blocks. Downsampling averages the input samples that fall in each
 * output sample's interval (a box low-pass, enough for speech recognition);
 * upsampling interpolates linearly.
 */
export class RateConverter {
  /**
   * @param {number} inputRate
   * @param {number} outputRate
   */
  constructor(inputRate, outputRate) {
    if (!(inputRate > 0 && outputRate > 0)) throw new RangeError("sample rates must be positive");
    this.step = inputRate / outputRate;
    this._sum = 0;
    this._count = 0;
    this._next = this.step;
    this._index = 0;
    this._previous = 0;
  }

  /**
   * One block of input samples -> the output samples it completes.
   * @param {Float32Array} input
   * @returns {Float32Array}
   */
  push(input) {
    if (this.step === 1) return input.slice();
    return this.step > 1 ? this._down(input) : this._up(input);
  }

  /** @param {Float32Array} input */
  _down(input) {
    const out = new Float32Array(Math.ceil(input.length / this.step) + 1);
    let n = 0;
    for (let i = 0; i < input.length; i++) {
      this._sum += input[i];
      this._count += 1;
      this._index += 1;
      if (this._index >= this._next) {
        out[n++] = this._sum / this._count;
        this._sum = 0;
        this._count = 0;
        this._next += this.step;
      }
    }
    this._next -= this._index;
    this._index = 0;
    return out.subarray(0, n);
  }

  /** @param {Float32Array} input */
  _up(input) {
    const out = new Float32Array(Math.ceil(input.length / this.step) + 1);
    let n = 0;
    // positions are counted from the previous block's last sample (index -1 here)
    let position = this._index;
    while (position < input.length - 1) {
      const at = Math.floor(position);
      const left = at < 0 ? this._previous : input[at];
      const right = input[at + 1];
      out[n++] = left + (right - left) * (position - at);
      position += this.step;
    }
    this._index = position - input.length;
    if (input.length > 0) this._previous = input[input.length - 1];
    return out.subarray(0, n);
  }
}
