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
    # Two interpreters, each importing every other module: CI has two cores.
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT.format(packages=PACKAGES,
                                                                   modules=modules[i::2])],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    results = [(*proc.communicate(timeout=300), proc.returncode) for proc in procs]
    for stdout, stderr, returncode in results:
        assert returncode == 0, stderr
        assert stdout.strip() == "", stdout
