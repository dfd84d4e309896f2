import sys

from fitdiff.demo.cli import main

sys.exit(main())
