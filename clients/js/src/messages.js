// Client-to-server messages of the three endpoints, as JSON-ready objects.
//
// Each builder takes what the caller knows and returns the message without its
// request_id (the request adds it). Field names follow DESIGN section 3.

/**
 * Audio on the wire: `encoding` (pcm_s16le, wav, flac, ogg_opus, mp3), rate, channels.
 * @param {string} [encoding]
 * @param {number} [sampleRate]
 * @param {number} [channels]
 * @returns {{encoding: string, sample_rate: number, channels: number}}
 */
export function audioFormat(encoding = "pcm_s16le", sampleRate = 16000, channels = 1) {
  return { encoding, sample_rate: sampleRate, channels };
}

/**
 * A chatStream request (Glide's schema); a plain string is a user message.
 * `tools` and `tool_choice` are OpenAI's shapes (Sluice's additions).
 * @param {string | Record<string, any>} message
 * @param {{messageHistory?: object[], overrideParams?: object, metadata?: unknown, tools?: object[], toolChoice?: string | object}} [options]
 */
export function chatMessage(message, options = {}) {
  const body = typeof message === "string" ? { role: "user", content: message } : { ...message };
  return defined({
    type: "chat",
    message: body,
    message_history: options.messageHistory,
    override_params: options.overrideParams,
    metadata: options.metadata,
    tools: options.tools,
    tool_choice: options.toolChoice,
  });
}

/**
 * The `speak` message that starts a speak request (`final` when all the text is in it).
 * @param {{text?: string, final: boolean, format?: object, voice?: string, metadata?: unknown}} options
 */
export function speakMessage(options) {
  return defined({
    type: "speak",
    final: options.final,
    text: options.text,
    format: options.format,
    voice: options.voice,
    metadata: options.metadata,
  });
}

/**
 * A `text` message appending streamed text to a speak request.
 * @param {string} text
 * @param {boolean} [final]
 */
export function textMessage(text, final = false) {
  return { type: "text", text, final };
}

/**
 * The `listen` message that starts a listen request; audio follows as binary frames.
 * @param {{format: object, language?: string, interimResults?: boolean, vad?: object, metadata?: unknown}} options
 */
export function listenMessage(options) {
  return defined({
    type: "listen",
    format: options.format,
    language: options.language,
    interim_results: options.interimResults,
    vad: options.vad,
    metadata: options.metadata,
  });
}

/**
 * The `converse` message that starts a conversation; the user's audio follows as
 * binary frames. `outputSampleRate` asks for reply audio (PCM16 mono) at that rate.
 * @param {{format: object, outputSampleRate?: number, instructions?: string, voice?: string, turnDetection?: boolean, language?: string, interimResults?: boolean, tools?: Record<string, unknown>[], toolChoice?: string | Record<string, unknown>, metadata?: unknown}} options
 */
export function converseMessage(options) {
  return defined({
    type: "converse",
    format: options.format,
    output_format:
      options.outputSampleRate === undefined ? undefined : { encoding: "pcm_s16le", sample_rate: options.outputSampleRate },
    instructions: options.instructions,
    voice: options.voice,
    turn_detection: options.turnDetection,
    language: options.language,
    interim_results: options.interimResults,
    tools: options.tools,
    tool_choice: options.toolChoice,
    metadata: options.metadata,
  });
}

/** The `end` message: the listen request's audio is over. */
export function endMessage() {
  return { type: "end" };
}

/**
 * The `resume` message: continue a started request after the last frame seen.
 * @param {string} requestId
 * @param {number} afterSeq
 */
export function resumeMessage(requestId, afterSeq) {
  return { type: "resume", request_id: requestId, after_seq: afterSeq };
}

/** @param {Record<string, unknown>} fields */
function defined(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}
