"""``make bench``: the gateway against a plain Channels baseline, side by side (see bench/README.md)."""
