import sys

from onionchat.cli import main

sys.exit(main())
