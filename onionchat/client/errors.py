"""The client's two ways to fail, told apart by the exit code of `onionchat connect`."""


class ClientError(Exception):
    """Bad options: `onionchat connect` exits 2 with this message."""


class ChatError(Exception):
    """The session failed (unreachable, refused, disconnected): exit 1 with this message."""
