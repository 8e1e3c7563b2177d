"""Architecture rules that keep the API process light."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BLOCK_ML_STACK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "peft", "trl", "vllm", "matplotlib"}:
            raise ImportError(f"{name} is blocked: the API service must not import it")
sys.meta_path.insert(0, Block())
import service.app, service.cli, service.openapi
from service.settings import Settings
app = service.app.create_app(Settings(data_dir=sys.argv[1]))
print("imported", sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_service_imports_and_builds_without_the_ml_stack(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_ML_STACK, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported []"


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")

    result = subprocess.run(
        [str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stdout + result.stderr


# One wrong import per contract: (the contract's name as lint-imports prints it, the module that
# gets the import, the import). Each must break its contract, so the contracts can fail.
WRONG_IMPORTS = [
    (
        "The engine meets the API only through its port",
        "inference/gateway.py",
        "from service.files import router",
    ),
    (
        "The engine meets the API only through its port",
        "inference/adapters.py",
        "import service.deps",
    ),
    (
        "Nothing but the app factory and the CLI imports the engines",
        "service/files/service.py",
        "import inference.relay",
    ),
    (
        "Nothing but the app factory and the CLI imports the engines",
        "service/jobs/service.py",
        "import trainer.hyperparameters",
    ),
    ("No import cycles", "service/errors.py", "import service.files.service"),
    ("No import cycles", "trainer/hyperparameters.py", "import trainer.worker"),
]


@pytest.mark.parametrize(("contract", "module", "line"), WRONG_IMPORTS)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, contract: str, module: str, line: str
) -> None:
    for package in ("service", "trainer", "inference", "graders"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}  # noqa\n")
    lint_imports = Path(sys.executable).with_name("lint-imports")

    result = subprocess.run(
        [str(lint_imports)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )

    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small() -> None:
    """STYLE.md's "look again" sizes, as hard limits for the product's packages."""
    too_long = []
    for package in ("service", "trainer", "inference", "graders"):
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            name = path.relative_to(REPO)
            if len(source.splitlines()) > MAX_MODULE_LINES:
                too_long.append(f"{name}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")

    assert not too_long, "\n".join(too_long)
