"""``python -m lagoon.server``: the same as the ``lagoon-server`` command."""

from lagoon.cli.server import main

if __name__ == "__main__":
    main()
