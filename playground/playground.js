// Sluice playground: chat, listen, speak and talk through the JavaScript client
// (clients/js, npm `sluice-client`), served beside this page at ./sluice-client/.
// One socket per endpoint and router; requests are multiplexed by request_id.

import {
  audioFormat,
  ChatChunk,
  Done,
  ModelReset,
  SluiceClient,
  SluiceError,
  SpeechEnded,
  SpeechStarted,
  Transcript,
} from "./sluice-client/index.js";
import { PcmPlayer, startMicrophone } from "./sluice-client/audio/index.js";
import { setupTalk } from "./talk.js";

const sluice = new SluiceClient(location.origin);

// What the page did, for people reading devtools and for the browser test.
const stats = { chatDone: 0, resets: 0, transcripts: [], audioBytes: 0, speakDone: 0 };
window.playground = { stats, sluice };

const $ = (id) => document.getElementById(id);

function line(log, cls, text) {
  const el = document.createElement("div");
  el.className = cls;
  el.textContent = text;
  log.appendChild(el);
  log.scrollTop = log.scrollHeight;
  return el;
}

function describe(error) {
  return error instanceof SluiceError ? `${error.errorName}: ${error.message}` : String(error);
}

// ---- routers -------------------------------------------------------------------

async function loadRouters() {
  const [language, speech, agent] = await Promise.all([
    fetch("/v1/language/").then((r) => r.json()),
    fetch("/v1/speech/").then((r) => r.json()),
    fetch("/v1/agent/").then((r) => r.json()),
  ]);
  const fill = (select, ids) => {
    select.innerHTML = "";
    for (const id of ids) select.add(new Option(id, id));
  };
  fill($("chat-router"), language.routers.map((r) => r.id));
  fill($("listen-router"), speech.routers.filter((r) => r.listen).map((r) => r.id));
  fill($("speak-router"), speech.routers.filter((r) => r.speak).map((r) => r.id));
  fill($("talk-router"), agent.routers.map((r) => r.id));
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
  try {
    for await (const item of sluice.chatStream($("chat-router").value, text)) {
      if (item instanceof ModelReset) {
        stats.resets += 1;
        answer.textContent = "";
        line(log, "reset", `(${item.modelId} failed mid-answer; restarting on the next model)`);
      } else if (item instanceof ChatChunk) {
        answer.textContent += item.content;
        if (item.finishReason) {
          stats.chatDone += 1;
          answer.title = `${item.providerId}/${item.modelName}`;
        }
      }
    }
  } catch (error) {
    line(log, "error", describe(error));
  }
});

// ---- listen ----------------------------------------------------------------------

let microphone = null;

async function startTalking() {
  if (microphone) return;
  player?.stop(); // barge-in: talking silences what is being spoken
  // the microphone's own rate: the gateway resamples with soxr, which recognizers like best
  const mic = await startMicrophone({ sampleRate: "device" });
  microphone = mic;
  const interim = line($("transcripts"), "interim", "");
  $("talk").classList.add("recording");
  $("listen-status").textContent = "listening…";
  try {
    const events = sluice.listen($("listen-router").value, mic, { format: mic.format, interimResults: true });
    for await (const item of events) {
      if (item instanceof SpeechStarted) $("listen-status").textContent = "speech…";
      else if (item instanceof SpeechEnded) $("listen-status").textContent = "listening…";
      else if (item instanceof Transcript && item.isFinal) {
        interim.textContent = "";
        if (item.text) {
          stats.transcripts.push(item.text);
          line($("transcripts"), "final", item.text);
        }
      } else if (item instanceof Transcript) {
        interim.textContent = item.text;
      } else if (item instanceof Done) {
        $("listen-status").textContent = "";
      }
    }
  } catch (error) {
    line($("transcripts"), "error", describe(error));
    $("listen-status").textContent = "";
  } finally {
    await mic.stop();
  }
}

async function stopTalking() {
  if (!microphone) return;
  const mic = microphone;
  microphone = null;
  $("talk").classList.remove("recording");
  await mic.stop(); // ends the audio: the client sends `end`
  $("listen-status").textContent = "transcribing…";
}

$("talk").addEventListener("pointerdown", startTalking);
$("talk").addEventListener("pointerup", stopTalking);
$("talk").addEventListener("pointerleave", stopTalking);

// ---- speak -----------------------------------------------------------------------

const SPEAK_RATE = 24000;
let player = null;

async function* counted(items) {
  for await (const item of items) {
    if (item instanceof Uint8Array) stats.audioBytes += item.length;
    yield item;
  }
}

$("speak-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("speak-input").value.trim();
  if (!text) return;
  player = player || new PcmPlayer({ sampleRate: SPEAK_RATE });
  $("speak-status").textContent = "speaking…";
  const format = audioFormat("pcm_s16le", SPEAK_RATE);
  try {
    await player.play(counted(sluice.speak($("speak-router").value, text, { format })), (item) => {
      if (item instanceof Done) {
        stats.speakDone += 1;
        $("speak-status").textContent =
          `spoke ${item.frame.usage.audio_ms} ms of audio (first audio after ${item.frame.time_to_first_audio_ms} ms)`;
      } else if (item instanceof ModelReset) {
        $("speak-status").textContent = `model ${item.modelId} failed; continuing on the next`;
      }
    });
  } catch (error) {
    $("speak-status").textContent = describe(error);
  }
});

$("speak-stop").addEventListener("click", () => {
  player?.stop();
  $("speak-status").textContent = "stopped";
});

// ---- talk ------------------------------------------------------------------------

stats.talk = setupTalk(sluice, $, line, describe);

loadRouters().catch((error) => {
  document.body.insertAdjacentHTML("afterbegin", `<p class="error">could not load routers: ${error}</p>`);
});
