"""The suite's own settings: a missing shared data folder fails the tests that need it, by name."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_missing_shared_data_fails_naming_the_folder(tmp_path):
    """This conftest in a checkout with no `../shared/data` beside it: a test that needs the data
    fails (it is not skipped) and the error names the folder that is missing."""
    tests = tmp_path / "checkout" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(HERE / "conftest.py", tests / "conftest.py")
    (tests / "test_needs_data.py").write_text("def test_it(shared_data):\n    pass\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(tests)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=tests.parent, env={**os.environ}, timeout=300
    )
    assert done.returncode == 1, done.stdout
    missing = tmp_path / "shared" / "data"
    assert f"{missing} is missing" in done.stdout, done.stdout
    assert "1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
