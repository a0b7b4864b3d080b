import sys

from unlearn_core.cli import main

sys.exit(main())
