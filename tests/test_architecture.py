"""The layering the design card fixes: `monitor` may import `trainer`; `trainer` never imports `monitor`."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_trainer_never_imports_monitor():
    modules = sorted((ROOT / "trainer").rglob("*.py"))
    assert modules, "no trainer modules found"
    offending = {str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path)
                                                     if name == "monitor" or name.startswith("monitor."))
                 for path in modules}
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_check_sees_a_monitor_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from monitor.service import Monitor\n")
    assert "monitor.service" in imported_modules(module)
