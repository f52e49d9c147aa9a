"""Test-only: a library that takes seconds to import and, once imported, says so in a file (the path in
`SLOW_IMPORT_DONE`), so that a test can tell when another process imported it."""

import os
import time
from pathlib import Path

time.sleep(3)
Path(os.environ["SLOW_IMPORT_DONE"]).touch()
