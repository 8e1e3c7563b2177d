"""Architecture rules that keep the API process light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
