"""The `onionchat` command. The program is imported only when run: a hashing worker
(background.Workers) is spawned by running this again under another name, and stays small."""

import sys


def run() -> None:
    from onionchat.cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
