"""OnionChat: a self-hosted anonymous group chat on a Tor onion service."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
