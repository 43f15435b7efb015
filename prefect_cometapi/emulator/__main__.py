"""``python -m prefect_cometapi.emulator [options]``: same as ``prefect-cometapi emulator``."""

import sys

from prefect_cometapi.cli import main

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
