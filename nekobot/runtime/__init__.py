"""The runtime manager: platform lifecycle and hot reconfiguration."""
