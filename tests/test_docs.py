"""docs/reference.md's flag tables are generated from the config's field declarations and the
run flags (`docs/make_reference.py`); they must match the code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_flag_tables_are_current(tmp_path):
    script = ROOT / "docs" / "make_reference.py"
    ok = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = tmp_path / "reference.md"  # the check can fail: a table edited by hand
    text = (ROOT / "docs" / "reference.md").read_text()
    stale.write_text(text.replace("| `--rows` |", "| `--rowz` |"))
    bad = subprocess.run(
        [sys.executable, str(script), "--check", str(stale)], capture_output=True, text=True
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
