"""The gateway's consumers: one per way into a room, all posting through ``gateway.rooms``."""
