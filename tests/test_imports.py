"""Every module imports on its own: an import cycle hidden by the order a
package's __init__ happens to import things fails here, not in the one test run
that imports a module first."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("basalt", "blockd", "cluster", "compute", "erasure", "gateway", "network",
            "storaged")

SCRIPT = """
import importlib, sys
from prometheus_client import REGISTRY
packages = {packages!r}
failed = []
for name in {modules!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[loaded]
    for collector in list(REGISTRY._collector_to_names):  # metrics a module made at import
        REGISTRY.unregister(collector)
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(failed))
"""


def test_every_module_imports_alone():
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(packages=PACKAGES,
                                                              modules=modules)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout
