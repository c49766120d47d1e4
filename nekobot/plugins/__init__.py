"""Built-in handler plugins (``[bot] plugins = ["nekobot.plugins.echo:setup"]``)."""
