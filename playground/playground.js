// Sluice playground: chat, listen and speak over Sluice's websocket protocol.
// One socket per endpoint and router; requests are multiplexed by request_id;
// audio travels in binary frames: byte 0 = N, bytes 1..N = request_id, then audio.

const wsBase = location.origin.replace(/^http/, "ws");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// What the page did, for people reading devtools and for the browser test.
const stats = { chatDone: 0, resets: 0, transcripts: [], audioBytes: 0, speakDone: 0 };
window.playground = { stats };

const $ = (id) => document.getElementById(id);

function newId() {
  return (crypto.randomUUID && crypto.randomUUID()) || String(Date.now() + Math.random());
}

function isTerminal(frame) {
  if (frame.type === "chunk") return "finish_reason" in frame.chunk;
  if (frame.type === "error") return "finish_reason" in frame.error;
  return "finish_reason" in frame;
}

/** One websocket to one endpoint; routes frames to per-request handlers. */
class Channel {
  constructor(path) {
    this.path = path;
    this.handlers = new Map();
    this.ready = null;
  }

  open() {
    if (this.ready) return this.ready;
    this.ready = new Promise((resolve, reject) => {
      const ws = new WebSocket(wsBase + this.path);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error("websocket error on " + this.path));
      ws.onclose = () => { this.ready = null; };
      ws.onmessage = (event) => this.dispatch(event.data);
    });
    return this.ready;
  }

  dispatch(data) {
    if (data instanceof ArrayBuffer) {
      const bytes = new Uint8Array(data);
      const n = bytes[0];
      const id = decoder.decode(bytes.subarray(1, 1 + n));
      const handler = this.handlers.get(id);
      if (handler && handler.audio) handler.audio(bytes.subarray(1 + n));
      return;
    }
    const frame = JSON.parse(data);
    const handler = this.handlers.get(frame.request_id);
    if (!handler) {
      if (frame.type === "error") console.warn("sluice:", frame.error.name, frame.error.message);
      return;
    }
    handler.frame(frame);
    if (isTerminal(frame)) this.handlers.delete(frame.request_id);
  }

  async start(message, handler) {
    const ws = await this.open();
    this.handlers.set(message.request_id, handler);
    ws.send(JSON.stringify(message));
    return ws;
  }

  async send(message) {
    (await this.open()).send(JSON.stringify(message));
  }

  async sendAudio(requestId, pcmBytes) {
    const ws = await this.open();
    const id = encoder.encode(requestId);
    const frame = new Uint8Array(1 + id.length + pcmBytes.byteLength);
    frame[0] = id.length;
    frame.set(id, 1);
    frame.set(new Uint8Array(pcmBytes.buffer, pcmBytes.byteOffset, pcmBytes.byteLength), 1 + id.length);
    ws.send(frame);
  }
}

const channels = new Map();
function channel(path) {
  if (!channels.has(path)) channels.set(path, new Channel(path));
  return channels.get(path);
}

function line(log, cls, text) {
  const el = document.createElement("div");
  el.className = cls;
  el.textContent = text;
  log.appendChild(el);
  log.scrollTop = log.scrollHeight;
  return el;
}

// ---- routers -------------------------------------------------------------------

async function loadRouters() {
  const [language, speech] = await Promise.all([
    fetch("/v1/language/").then((r) => r.json()),
    fetch("/v1/speech/").then((r) => r.json()),
  ]);
  const fill = (select, ids) => {
    select.innerHTML = "";
    for (const id of ids) select.add(new Option(id, id));
  };
  fill($("chat-router"), language.routers.map((r) => r.id));
  fill($("listen-router"), speech.routers.filter((r) => r.listen).map((r) => r.id));
  fill($("speak-router"), speech.routers.filter((r) => r.speak).map((r) => r.id));
}

// ---- chat ------------------------------------------------------------------------

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  const log = $("chat-log");
  line(log, "user", "you: " + text);
  const answer = line(log, "assistant", "");
  const router = $("chat-router").value;
  await channel(`/v1/language/${router}/chatStream`).start(
    { type: "chat", request_id: newId(), message: { role: "user", content: text } },
    {
      frame(frame) {
        if (frame.type === "chunk") {
          answer.textContent += frame.chunk.model_response.message.content;
          if (frame.chunk.finish_reason) {
            stats.chatDone += 1;
            answer.title = `${frame.chunk.provider_id}/${frame.chunk.model_name}`;
          }
        } else if (frame.type === "error" && frame.error.name === "model_unavailable") {
          stats.resets += 1;
          answer.textContent = "";
          line(log, "reset", `(${frame.error.model_id} failed mid-answer; restarting on the next model)`);
        } else if (frame.type === "error") {
          line(log, "error", `${frame.error.name}: ${frame.error.message}`);
        }
      },
    },
  );
});

// ---- listen ----------------------------------------------------------------------

let recording = null;

async function startTalking() {
  if (recording) return;
  const router = $("listen-router").value;
  const ch = channel(`/v1/speech/${router}/listen`);
  const requestId = newId();
  // raw microphone audio: the browser's echo cancellation, noise suppression and
  // gain control reshape speech in ways that hurt recognition
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: 48000 });
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const interim = line($("transcripts"), "interim", "");
  recording = { stream, context, source, processor, requestId, ch };
  $("talk").classList.add("recording");
  $("listen-status").textContent = "listening…";
  await ch.start(
    {
      type: "listen",
      request_id: requestId,
      format: { encoding: "pcm_s16le", sample_rate: context.sampleRate, channels: 1 },
      interim_results: true,
    },
    {
      frame(frame) {
        if (frame.type === "speech_started") $("listen-status").textContent = "speech…";
        else if (frame.type === "speech_ended") $("listen-status").textContent = "listening…";
        else if (frame.type === "transcript") {
          const t = frame.transcript || frame;
          if (t.is_final) {
            interim.textContent = "";
            if (t.text) {
              stats.transcripts.push(t.text);
              line($("transcripts"), "final", t.text);
            }
          } else {
            interim.textContent = t.text;
          }
        } else if (frame.type === "error") {
          line($("transcripts"), "error", `${frame.error.name}: ${frame.error.message}`);
        } else if (frame.type === "done") {
          $("listen-status").textContent = "";
        }
      },
    },
  );
  processor.onaudioprocess = (event) => {
    const input = event.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(input.length);
    for (let i = 0; i < input.length; i++) {
      const s = Math.max(-1, Math.min(1, input[i]));
      pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
    }
    ch.sendAudio(requestId, pcm);
  };
  source.connect(processor);
  processor.connect(context.destination);
}

async function stopTalking() {
  if (!recording) return;
  const { stream, context, source, processor, requestId, ch } = recording;
  recording = null;
  $("talk").classList.remove("recording");
  processor.onaudioprocess = null;
  source.disconnect();
  processor.disconnect();
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  await ch.send({ type: "end", request_id: requestId });
  $("listen-status").textContent = "transcribing…";
}

$("talk").addEventListener("pointerdown", startTalking);
$("talk").addEventListener("pointerup", stopTalking);
$("talk").addEventListener("pointerleave", stopTalking);

// ---- speak -----------------------------------------------------------------------

let player = null;

$("speak-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("speak-input").value.trim();
  if (!text) return;
  const rate = 24000;
  player = player || new AudioContext({ sampleRate: rate });
  await player.resume();
  let playhead = player.currentTime + 0.05;
  let carry = null;
  const router = $("speak-router").value;
  $("speak-status").textContent = "speaking…";
  await channel(`/v1/speech/${router}/speak`).start(
    {
      type: "speak",
      request_id: newId(),
      text,
      final: true,
      format: { encoding: "pcm_s16le", sample_rate: rate, channels: 1 },
    },
    {
      audio(bytes) {
        stats.audioBytes += bytes.length;
        let data = bytes;
        if (carry) {
          data = new Uint8Array(carry.length + bytes.length);
          data.set(carry);
          data.set(bytes, carry.length);
          carry = null;
        }
        if (data.length % 2) {
          carry = data.slice(data.length - 1);
          data = data.subarray(0, data.length - 1);
        }
        const samples = new Int16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
        if (!samples.length) return;
        const buffer = player.createBuffer(1, samples.length, rate);
        const out = buffer.getChannelData(0);
        for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 0x8000;
        const node = player.createBufferSource();
        node.buffer = buffer;
        node.connect(player.destination);
        playhead = Math.max(playhead, player.currentTime);
        node.start(playhead);
        playhead += buffer.duration;
      },
      frame(frame) {
        if (frame.type === "done") {
          stats.speakDone += 1;
          $("speak-status").textContent =
            `spoke ${frame.usage.audio_ms} ms of audio (first audio after ${frame.time_to_first_audio_ms} ms)`;
        } else if (frame.type === "error" && frame.error.name === "model_unavailable") {
          $("speak-status").textContent = `model ${frame.error.model_id} failed; continuing on the next`;
        } else if (frame.type === "error") {
          $("speak-status").textContent = `${frame.error.name}: ${frame.error.message}`;
        }
      },
    },
  );
});

loadRouters().catch((error) => {
  document.body.insertAdjacentHTML("afterbegin", `<p class="error">could not load routers: ${error}</p>`);
});
