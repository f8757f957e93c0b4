"""Who may use Sluice and what it may reveal: client keys, Origins, limits, redaction.

- `keys`: hash and verify client API keys (`sluice hash-key`), find a key's entry.
- `access`: the aiohttp middleware that authenticates requests and checks Origins
  before any websocket upgrade, and the per-key rate and socket limits.
- `redact`: keep provider secrets out of logs, frames and error bodies.
- `exposure`: refuse to serve a public interface without keys.
"""
