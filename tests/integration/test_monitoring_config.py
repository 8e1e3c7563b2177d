"""The shipped Prometheus config, alert rules and Grafana dashboard, checked against what we export.

promtool checks the config and rules and runs the rules' unit tests; every metric a dashboard panel
or an alert queries must be one OpenFT exports or one the installed vLLM defines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import vllm

from service.app import build_state
from service.db import migrate
from service.settings import Settings
from tests.support.ci import require

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
METRIC = re.compile(r"\b(openft_[a-z_]+|vllm:[a-z_]+|openft:[a-z0-9_:]+)")
RECORDED = re.compile(r"^\s*- record: (\S+)", re.MULTILINE)
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    require(binary is not None, "promtool (Debian package prometheus)")
    assert binary is not None
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_config_and_the_rules(tmp_path: Path) -> None:
    shutil.copytree(PROMETHEUS, tmp_path / "prometheus")
    (tmp_path / "prometheus" / "openft-metrics-token").write_text("a-token\n")

    config = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    rules = promtool("check", "rules", "rules/openft.yml", cwd=PROMETHEUS)
    # deploy/compose.yaml's config reads its token from a compose secret, absent here.
    compose = promtool("check", "config", "--syntax-only", "prometheus-compose.yml", cwd=PROMETHEUS)

    assert config.returncode == 0, config.stdout + config.stderr
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert compose.returncode == 0, compose.stdout + compose.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "rules_test.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The names of every metric family an OpenFT API process exports."""
    data = tmp_path_factory.mktemp("metrics")
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'openft.db'}")
    state = build_state(settings)
    migrate.upgrade(state.db)
    names = {family.name for family in state.metrics.registry.collect()}
    state.db.dispose()
    return names


def vllm_defines(name: str) -> bool:
    source = Path(vllm.__file__).parent
    return any(f'"{name}"' in path.read_text() for path in (source / "v1" / "metrics").glob("*.py"))


def queried_metrics() -> list[tuple[str, str]]:
    found = []
    for dashboard in DASHBOARDS.glob("*.json"):
        for panel in json.loads(dashboard.read_text())["panels"]:
            for target in panel.get("targets", []):
                found += [
                    (f"{dashboard.name}: {panel['title']}", m)
                    for m in METRIC.findall(target["expr"])
                ]
    rules = (PROMETHEUS / "rules" / "openft.yml").read_text()
    found += [("rules/openft.yml", m) for m in METRIC.findall(rules)]
    return found


def test_every_queried_metric_is_exported_by_openft_or_vllm(exported: set[str]) -> None:
    queried = queried_metrics()
    assert len(queried) > 20

    recorded = set(RECORDED.findall((PROMETHEUS / "rules" / "openft.yml").read_text()))
    unknown = []
    for where, name in queried:
        if name.startswith("openft:"):  # a recording rule of ours
            if name not in recorded:
                unknown.append((where, name))
            continue
        base = name
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        if name.startswith("vllm:"):
            if not vllm_defines(base):
                unknown.append((where, name))
        elif base not in exported:
            unknown.append((where, name))

    assert unknown == []
