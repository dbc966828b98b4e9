"""The core's tests need no UI library: importing every tests/core module leaves gradio unimported."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_test_modules_import_no_gradio():
    modules = sorted(f"tests.core.{path.stem}" for path in (ROOT / "tests" / "core").glob("test_*.py"))
    assert len(modules) > 15
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'gradio' not in sys.modules, name\n"
        "from tests.photos import photo\n"
        "photo('lion.jpg')\n"
        "assert 'gradio' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
