"""The live fan-out engine: a process's hub (one layer channel, an audience per room), room streams
(order, no duplicates, gaps read from the history) and outgoing frames (each message serialised and
framed once), with the channel-layer class it reads fastest (``fanout.redis_layer``).

It knows nothing of the gateway: what it needs from a room service (the history, group names,
metrics) is handed to ``Hub`` (``fanout.hub.History`` and the constructor's arguments)."""
