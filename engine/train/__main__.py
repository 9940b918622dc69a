"""`python -m dgls.engine.train`: same as `dgls train`."""

import sys

from .train import main

sys.exit(main())
