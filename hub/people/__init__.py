"""A person's data: the operator's lookup of a phone across the hub, and its erasure."""
