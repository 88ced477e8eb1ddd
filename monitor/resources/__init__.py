"""Files shipped inside the package (read with `importlib.resources`, so they work from a wheel).

``demo.yaml`` is the config of `anomon demo` and `anomon generate`, and the one definition of the
synthetic traffic's schema (`monitor.traffic` reads its ``fields`` and ``key`` from it).

>>> demo_config_mapping()["key"]
'user'
>>> DEMO_CONFIG.name
'demo.yaml'
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

DEMO_CONFIG: Traversable = files(__name__) / "demo.yaml"


def demo_config_mapping() -> dict[str, Any]:
    """The parsed ``demo.yaml``, as a fresh mapping on every call."""
    return yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
