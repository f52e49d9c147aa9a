"""`python -m src.upload [FOLDERS] [--uri URI]`: send results kept on disk to the tracking server
(see src/pending.py)."""

import sys

from src.pending import main

if __name__ == "__main__":
    sys.exit(main())
