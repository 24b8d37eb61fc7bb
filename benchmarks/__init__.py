"""drkit's benchmarks: ``python -m benchmarks`` (every one), or ``python -m benchmarks.X``.

drkit is measured as an installed package runs: byte-compiled.  pip compiles a package
when it installs it, but not a checkout installed with ``-e``, and where
PYTHONDONTWRITEBYTECODE is set nothing ever compiles it, so every drkit process would
compile its ~100 modules again (about 60 ms a command).  Compile them once here.
"""

import compileall
from pathlib import Path

compileall.compile_dir(Path(__file__).resolve().parent.parent / "drkit", quiet=2)
