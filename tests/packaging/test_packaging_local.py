"""What a user sees when the package cannot load its compiled engine."""
from __future__ import annotations

import shutil
import subprocess
import sys

from tests.support import ROOT

PACKAGE = ROOT / "dist_sync"


def test_source_folder_without_a_build_says_what_to_do(tmp_path):
    # A checkout whose extension was installed elsewhere (pip install .) and not built in place:
    # run from the checkout, Python imports the source folder, which has no _core.
    shutil.copytree(PACKAGE, tmp_path / "dist_sync",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # The development install's editable finder would map dist_sync._core to the in-place build;
    # a user's `pip install .` has none.
    script = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in "
              "getattr(f, '__name__', type(f).__name__)]; import dist_sync")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "dist_sync's compiled engine (dist_sync._core) cannot be imported from" in result.stderr
    assert "build it in place with `make install`" in result.stderr
    assert "or run from another directory" in result.stderr
    assert "circular import" not in result.stderr.splitlines()[-1]
