"""One running gateway and the aiohttp app around it.

`gateway.core`: the `Gateway` a server holds and the app keys; `gateway.build`:
routers and speech endpoints from a config; `gateway.context`: building and
closing the gateway with the app; `gateway.gauges`: the metrics' view of it;
`gateway.app`: `build_app(config)`, every route and middleware wired.
"""
