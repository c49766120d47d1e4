"""The debug console: server, commands, client."""
