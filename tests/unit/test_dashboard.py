"""The shipped Grafana dashboard only charts metrics the gateway defines."""

from __future__ import annotations

import json
import re

from tests.helpers import ROOT


def test_dashboard_queries_name_defined_metrics() -> None:
    dashboard = json.loads((ROOT / "configs" / "grafana-dashboard.json").read_text())
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ray_(gateway_[a-z_]+)", target["expr"])
    }
    source = (ROOT / "llmops" / "_metrics.py").read_text()
    defined = set(re.findall(r'"(gateway_[a-z_]+)"', source))
    assert queried and queried <= defined, queried - defined
    assert defined <= queried, f"metrics nobody charts: {defined - queried}"
