import sys

from vit_core.cli import main

sys.exit(main())
