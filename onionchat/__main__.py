import sys

from onionchat.cli import main

if __name__ == "__main__":  # not when a worker process (background.Workers) imports it
    sys.exit(main())
