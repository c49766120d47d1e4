"""Platform actors: the plugin API (``base``) and the built-in platforms."""
