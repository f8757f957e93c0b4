// The playground's Talk panel: a voice conversation with an agent router
// (GET /v1/agent/{router}/converse) through the JavaScript client.
//
// microphone frames -> conversation.sendAudio      (the user's side)
// conversation events -> transcripts, reply text    (shown)
// reply audio -> PcmPlayer (gapless)               (heard); `played` reported every 250 ms
// reply_interrupted (barge-in) -> PcmPlayer.stop() at once, and `played` reported

import {
  ReplyInterrupted,
  ReplyText,
  SpeechStarted,
  Transcript,
  TurnEnded,
  UserTurn,
} from "./sluice-client/index.js";
import { PcmPlayer, startMicrophone } from "./sluice-client/audio/index.js";

const REPLY_RATE = 24000;
const REPORT_MS = 250;

/**
 * Wire the Talk panel to `sluice`. `stats` (exposed as window.playground.stats.talk)
 * counts what the panel did: transcripts heard, turns ended, reply bytes received and
 * played, interruptions.
 */
export function setupTalk(sluice, $, line, describe) {
  const stats = { transcripts: [], replies: [], turns: 0, bytesReceived: 0, bytesPlayed: 0, interrupted: 0, lastInterrupt: null, ended: 0 };
  let session = null;

  async function start() {
    const mic = await startMicrophone({ sampleRate: "device" });
    const player = new PcmPlayer({ sampleRate: REPLY_RATE });
    if (player.context.state === "suspended") await player.context.resume();
    const conversation = sluice.converse($("talk-router").value, { format: mic.format, outputSampleRate: REPLY_RATE });
    // one player per conversation: its played time is the conversation's reply clock
    const playedMs = () => player.playedSeconds * 1000;
    const report = setInterval(() => {
      const ms = playedMs();
      stats.bytesPlayed = Math.round((ms * REPLY_RATE * 2) / 1000);
      if (player.playing || ms > 0) conversation.played(ms);
    }, REPORT_MS);
    session = { mic, conversation };
    $("talk-toggle").textContent = "Stop conversation";
    $("talk-status").textContent = "listening…";

    const pump = (async () => {
      for await (const frame of mic) conversation.sendAudio(frame);
      conversation.end();
    })();
    const log = $("talk-log");
    let interim = null;
    let reply = null;
    try {
      for await (const item of conversation) {
        if (item instanceof Uint8Array) {
          stats.bytesReceived += item.length;
          player.push(item);
        } else if (item instanceof SpeechStarted) {
          $("talk-status").textContent = "you are speaking…";
        } else if (item instanceof Transcript) {
          interim = interim ?? line(log, "interim", "");
          interim.textContent = item.text;
          if (item.isFinal) {
            if (item.text) stats.transcripts.push(item.text);
            interim.remove();
            interim = null;
          }
        } else if (item instanceof UserTurn) {
          line(log, "user", "you: " + item.text);
          reply = line(log, "assistant", "");
          $("talk-status").textContent = "answering…";
        } else if (item instanceof ReplyText) {
          reply = reply ?? line(log, "assistant", "");
          reply.textContent += item.delta;
        } else if (item instanceof ReplyInterrupted) {
          // barge-in: silence at once; what was not played is dropped for good
          player.stop();
          conversation.played(playedMs());
          stats.interrupted += 1;
          stats.lastInterrupt = { keptMs: item.keptMs, playedMs: playedMs(), bufferedAfterStop: player.bufferedSeconds };
          line(log, "reset", `(interrupted; the assistant keeps: "${item.text}")`);
        } else if (item instanceof TurnEnded) {
          stats.turns += 1;
          stats.replies.push(item.replyText);
          if (item.error) line(log, "error", `${item.error.name}: ${item.error.message}`);
          reply = null;
          $("talk-status").textContent = "listening…";
        }
      }
      stats.ended += 1;
      $("talk-status").textContent = "conversation ended";
    } catch (error) {
      line(log, "error", describe(error));
      $("talk-status").textContent = "";
    } finally {
      clearInterval(report);
      await mic.stop();
      await pump.catch(() => {});
      // let the last reply finish playing before the player goes
      setTimeout(() => void player.close(), Math.ceil(player.bufferedSeconds * 1000) + 100);
      session = null;
      $("talk-toggle").textContent = "Start conversation";
    }
  }

  async function stop() {
    const current = session;
    if (current === null) return;
    $("talk-status").textContent = "finishing…";
    await current.mic.stop(); // the pump sends `end`; the answer to what was said still comes
  }

  $("talk-toggle").addEventListener("click", () => {
    if (session === null) start().catch((error) => line($("talk-log"), "error", describe(error)));
    else void stop();
  });

  return stats;
}
