"""A child process for tests of ``worker.supervise.run_child``: writes what it sees of
CUDA_VISIBLE_DEVICES (``<unset>`` when absent) to the file named first."""

import os
import sys
from pathlib import Path

Path(sys.argv[1]).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
