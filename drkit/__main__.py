"""``python -m drkit``."""

from drkit.cli.entry import main

main()
