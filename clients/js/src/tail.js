// A listen request's unacknowledged audio: what a resume sends again (docs/resume.md
// section 7; the Python client's audio_tail.py does the same).
//
// sendAudio(chunk) -> AudioTail.add -> kept (bounded, oldest out)
// transcript / speech_ended frames -> heard(endMs, isFinal): a final one drops the
//     audio before its end
// resume -> unheard() -> the audio after the last final transcript, resent behind
//     {"type": "audio_offset", "offset"} (where it starts in the request's audio)
//
// The audio is resent from the last final transcript's end: a server that still runs
// the request skips what it has; one that took it over from a dead instance runs it
// again from there and needs every segment not yet final whole. Only formats whose
// bytes map to milliseconds are kept: pcm_s16le, and wav (its 44-byte header first).

const WAV_HEADER_BYTES = 44;

/** The audio a listen request sent after the end of its last final transcript. */
export class AudioTail {
  /**
   * @param {number} bytesPerMs
   * @param {number} headerBytes
   * @param {number} maxBytes
   */
  constructor(bytesPerMs, headerBytes, maxBytes) {
    this._perMs = bytesPerMs;
    this._header = headerBytes;
    this._maxBytes = maxBytes;
    /** @type {[number, Uint8Array][]} (offset in the request's audio, bytes), in order */
    this._chunks = [];
    this._kept = 0;
    /** Bytes sent so far: the offset of the next chunk. */
    this.sent = 0;
    /** The offset up to which a final transcript covered the audio. */
    this.ackedAt = 0;
  }

  /**
   * The tail of a request in `format`, or null for a compressed one.
   * @param {{encoding?: string, sample_rate?: number, channels?: number} | undefined} format
   * @param {number} maxBytes
   * @returns {AudioTail | null}
   */
  static forFormat(format, maxBytes) {
    const encoding = format?.encoding ?? "pcm_s16le";
    const rate = format?.sample_rate;
    if (!rate || (encoding !== "pcm_s16le" && encoding !== "wav")) return null;
    const perMs = (rate * (format?.channels ?? 1) * 2) / 1000;
    return new AudioTail(perMs, encoding === "wav" ? WAV_HEADER_BYTES : 0, maxBytes);
  }

  /**
   * A chunk of audio was queued for the server (kept as a copy).
   * @param {Uint8Array} chunk
   */
  add(chunk) {
    if (chunk.length === 0) return;
    this._chunks.push([this.sent, chunk.slice()]);
    this.sent += chunk.length;
    this._kept += chunk.length;
    while (this._kept > this._maxBytes && this._chunks.length > 1) {
      const [, dropped] = /** @type {[number, Uint8Array]} */ (this._chunks.shift());
      this._kept -= dropped.length;
    }
  }

  /**
   * The server reported audio up to `endMs`; a final transcript acknowledges
   * everything before it (that audio is dropped).
   * @param {number} endMs
   * @param {boolean} isFinal
   */
  heard(endMs, isFinal) {
    if (!isFinal) return;
    const offset = Math.min(this.sent, this._header + Math.floor(endMs * this._perMs));
    this.ackedAt = Math.max(this.ackedAt, offset);
    while (this._chunks.length > 0) {
      const [start, chunk] = this._chunks[0];
      if (start + chunk.length > offset) break;
      this._chunks.shift();
      this._kept -= chunk.length;
    }
  }

  /**
   * The kept audio after the last final transcript's end, to send again, and the
   * offset of its first byte in the request's audio.
   * @returns {[number, Uint8Array[]]}
   */
  unheard() {
    /** @type {Uint8Array[]} */
    const out = [];
    /** @type {number | null} */
    let first = null;
    for (const [start, chunk] of this._chunks) {
      if (start + chunk.length <= this.ackedAt) continue;
      const cut = Math.max(0, this.ackedAt - start);
      if (first === null) first = start + cut;
      out.push(chunk.subarray(cut));
    }
    return [first ?? this.sent, out];
  }
}
