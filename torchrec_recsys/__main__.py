"""``python -m torchrec_recsys``."""

import sys

from torchrec_recsys.cli import main

sys.exit(main())
