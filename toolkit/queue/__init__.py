"""The task protocol on Redis Streams."""
