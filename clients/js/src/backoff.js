// Reconnect delays: exponential backoff with jitter.
//
// attempt 0 -> 0 ms (reconnect at once after a close that followed real work);
// attempt k -> a random delay in [(1 - jitter) * d, d] with
// d = min(maximum, initial * multiplier ** (k - 1)).

/** @typedef {{initial: number, maximum: number, multiplier: number, jitter: number}} Backoff seconds */

/**
 * How long to wait before a connect attempt after `attempt` consecutive failures.
 * @param {number} attempt consecutive failures so far (0, 1, 2, ...)
 * @param {Backoff} backoff seconds
 * @param {() => number} [random] a uniform [0, 1) source
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, backoff, random = Math.random) {
  if (attempt <= 0) return 0;
  const ceiling = Math.min(backoff.maximum, backoff.initial * backoff.multiplier ** (attempt - 1));
  return (ceiling - random() * ceiling * backoff.jitter) * 1000;
}

/** @type {Readonly<Backoff>} The default backoff, in seconds: 0.1 s doubling up to 5 s, full jitter. */
export const DEFAULT_BACKOFF = Object.freeze({ initial: 0.1, maximum: 5, multiplier: 2, jitter: 1 });

/**
 * A backoff (seconds) checked for sense: 0 <= initial <= maximum, multiplier >= 1, jitter in [0, 1].
 * @param {Partial<Backoff>} [given]
 * @returns {Backoff}
 */
export function checkedBackoff(given = {}) {
  const b = { ...DEFAULT_BACKOFF, ...given };
  if (!(b.initial >= 0 && b.maximum >= b.initial && b.multiplier >= 1)) {
    throw new RangeError("backoff needs 0 <= initial <= maximum and multiplier >= 1");
  }
  if (!(b.jitter >= 0 && b.jitter <= 1)) throw new RangeError("backoff jitter must be within [0, 1]");
  return b;
}
