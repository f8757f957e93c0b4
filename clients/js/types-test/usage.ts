// Typed use of the declarations: `tsc --noEmit -p tsconfig.json` must accept this file
// (and the declarations it uses); the @ts-expect-error lines must stay errors.
import {
  AllModelsUnavailable,
  audioFormat,
  ChatChunk,
  ConnectionLost,
  Done,
  ModelReset,
  SluiceClient,
  SluiceError,
  ReplyInterrupted,
  ReplyText,
  SpeakSegment,
  Transcript,
  TurnEnded,
  UserTurn,
  type ClientOptions,
  type Conversation,
} from "sluice-client";
import { PcmPlayer, startMicrophone } from "sluice-client/audio";

declare const NodeWebSocket: new (url: string, protocols?: string | string[], options?: { headers?: Record<string, string> }) => WebSocket;

const options: ClientOptions = { WebSocket: NodeWebSocket, backoff: { initial: 0.05 }, resume: true };

export async function chat(sluice: SluiceClient): Promise<string> {
  const controller = new AbortController();
  let text = "";
  try {
    for await (const event of sluice.chatStream("default", "Hi", { metadata: { n: 1 }, signal: controller.signal })) {
      if (event instanceof ModelReset) text = "";
      else if (event instanceof ChatChunk) text += event.content + (event.finishReason ?? "");
    }
  } catch (error) {
    if (error instanceof ConnectionLost && error.retryable) return `lost at ${error.closeCode}`;
    if (error instanceof AllModelsUnavailable) return error.errorName;
    if (error instanceof SluiceError) throw error;
  }
  return text + (await sluice.chatText("default", { role: "user", content: "again" }));
}

export async function voice(): Promise<number> {
  const sluice = new SluiceClient("http://127.0.0.1:9099", options);
  const format = audioFormat("pcm_s16le", 24000);
  const player = new PcmPlayer({ sampleRate: format.sample_rate });
  await player.play(sluice.speak("default", "Hello.", { format }), (event) => {
    if (event instanceof Done) console.log(event.finishReason);
    if (event instanceof SpeakSegment) console.log(event.data);
  });
  player.stop();
  const heardSeconds: number = player.playedSeconds;
  if (heardSeconds < 0) return 0;
  const mic = await startMicrophone({ sampleRate: 16000 });
  let finals = 0;
  for await (const event of sluice.listen("default", mic, { format: mic.format, interimResults: true })) {
    if (event instanceof Transcript && event.isFinal) finals += event.text.length;
  }
  const audio: Uint8Array = await sluice.speakBytes("default", "Hi.", { format });
  const heard: Transcript[] = await sluice.listenBytes("default", audio, { format, chunkBytes: 640 });
  sluice.close();
  // @ts-expect-error listen needs a format
  sluice.listen("default", [audio], {});
  // @ts-expect-error a chat message is a string or a message object
  sluice.chatStream("default", 42);
  return finals + heard.length + sluice.stats.resumed;
}

export async function tools(sluice: SluiceClient): Promise<string[]> {
  const names: string[] = [];
  const weather = { type: "function", function: { name: "get_weather", parameters: { type: "object" } } };
  for await (const event of sluice.chatStream("default", "Weather?", { tools: [weather], toolChoice: "auto" })) {
    if (event instanceof ChatChunk) {
      for (const call of event.toolCalls) names.push(String(call.function?.name));
      if (event.finishDetail === "tool_calls") names.push("stopped for tools");
    }
  }
  return names;
}

export async function talk(sluice: SluiceClient, frames: Uint8Array[]): Promise<number> {
  const conversation: Conversation = sluice.converse("assistant", {
    format: audioFormat("pcm_s16le", 16000),
    outputSampleRate: 24000,
    metadata: { user: "u1" },
  });
  for (const frame of frames) conversation.sendAudio(frame);
  conversation.played(120);
  conversation.text("And tomorrow?", { respond: true });
  conversation.end();
  let bytes = 0;
  let said = "";
  for await (const item of conversation) {
    if (item instanceof Uint8Array) bytes += item.length;
    else if (item instanceof UserTurn) said = item.text;
    else if (item instanceof ReplyText) said += item.delta;
    else if (item instanceof ReplyInterrupted) bytes = item.keptBytes ?? bytes;
    else if (item instanceof TurnEnded && item.error) said = item.error.name;
    else if (item instanceof Done) bytes += Number(item.usage?.turns ?? 0);
  }
  // @ts-expect-error played takes milliseconds as a number
  conversation.played("120");
  return bytes + said.length;
}
