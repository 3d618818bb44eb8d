import sys

from xraycnn.cli import main

sys.exit(main())
