"""The outbound buffer: per-queue offline storage and replay."""
