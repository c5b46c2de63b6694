import sys

from bench.cli import main

try:
    main()
except KeyboardInterrupt:
    # Interrupted before the scenarios began: everything started is stopped.
    print("interrupted", file=sys.stderr)
    sys.exit(130)
