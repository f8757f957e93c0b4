"""Glide 0.1.0's HTTP and websocket surface, with Sluice's probes and listings.

`errors`: the `{name, message}` shape; `probes`: health, ready, metrics;
`listings`: the routers a caller may use; `chat`: the HTTP chat call; `sockets`:
chatStream, speak / listen and converse upgrades; `lookup`: what handlers read from
a request; `playground`: the browser page. `gateway.app` wires them.
"""
