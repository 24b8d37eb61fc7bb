"""``python -m drkit``."""

from drkit.entry import main

main()
