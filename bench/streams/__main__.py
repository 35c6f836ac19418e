"""``python -m bench.streams``: the concurrent-streams bench (see cli.py for its manual)."""

import sys

from bench.streams.cli import main

if __name__ == "__main__":
    # Named as users type it; argparse would otherwise name it after this file, "__main__.py".
    sys.exit(main(prog="python -m bench.streams"))
