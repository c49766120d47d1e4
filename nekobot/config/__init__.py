"""Configuration: the ``nekobot.toml`` schema and its version history."""
