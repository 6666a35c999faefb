"""The delivery path: claim, batch, send, record, with retry policy and backoff."""
