"""`python -m dgls.engine.train`: same as `dgls train`."""

import sys

from .command import main

sys.exit(main())
