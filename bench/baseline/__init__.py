"""The Channels tutorial chat, as the bench's baseline: what stock Channels does with one room."""
