"""The actor core: mailboxes, supervision, backoff and errors; no domain imports."""
