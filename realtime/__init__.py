"""The OpenAI Realtime API's event protocol over a Sluice conversation.

`GET /v1/realtime?model=<agent router>` speaks the Realtime API's events (both
the GA shapes and the beta shapes older SDKs send) and drives the conversation
pipeline (`pipelines.conversation.converse`) with them:

- `formats`: the audio formats (`audio/pcm` 24 kHz, `audio/pcmu`, `audio/pcma`;
  beta `pcm16`, `g711_ulaw`, `g711_alaw`), base64 audio in and out;
- `session`: the session's settings and `session.update`, in either dialect;
- `client_events`: a client event's JSON in, a typed event or a `Problem` out;
- `server_events`: builders of every server event, named per dialect;
- `ids`: event, item, response and session ids;
- `problems`: the `error` event's payload (`Problem`), raised by the parsers;
- `voices`: a session's voice name -> the speak router's voice;
- `bridge`: Realtime client events -> conversation inputs, conversation events
  -> Realtime server events, composed of the parts below;
- `channel`: what the bridge's parts share (settings, ids, `send` / `emit`, the
  last item's id);
- `input_buffer`: `input_audio_buffer.append` / `commit` / `clear`;
- `user_items`: the user's items (VAD or committed segments) and their transcripts;
- `item_create`: `conversation.item.create`;
- `responses`: `response.create` / `response.cancel` and which response runs;
- `response_output`: one response's server events, from `response.created` to
  `response.done`;
- `endpoint`: the websocket handler (the checks before the upgrade);
- `connection`: one session's socket at work: reader, conversation, writer, and
  its part in the gateway's open sockets (gauges, drain).
"""
