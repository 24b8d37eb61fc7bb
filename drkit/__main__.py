"""``python -m drkit``."""

from drkit.cli import main

main()
