// sluice-client/audio: browser audio helpers, usable without a bundler.
// startMicrophone: mic -> AudioWorklet -> PCM16 frames for SluiceClient.listen.
// PcmPlayer: gapless playback of SluiceClient.speak audio, stop() for barge-in.

export { Microphone, RAW_SPEECH, startMicrophone } from "./microphone.js";
export { PcmPlayer } from "./player.js";
export { RateConverter, floatToPcm16, pcm16ToFloat } from "./pcm.js";
