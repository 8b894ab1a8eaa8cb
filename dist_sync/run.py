"""``python -m dist_sync.run -np 4 train.py [args]``: the command line of dist_sync.run.

``dist_sync.run`` itself is the function (dist_sync.launch.runner.run). Importing this module
by name (``import dist_sync.run``) would make the package attribute this module instead, so
on import it puts the function in its place: ``dist_sync.run`` stays callable either way.
"""
import sys

from dist_sync.launch.cli import main
from dist_sync.launch.runner import run

if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__] = run  # type: ignore[assignment]
