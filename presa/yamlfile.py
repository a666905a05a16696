"""Reading the YAML reference data (catalog, PDTA, flows, holidays, messages, settings, page words).

libyaml's loader when PyYAML was built with it: the same safe subset as ``yaml.safe_load``, several times faster
(the PDTA templates: 0.17 s with the pure-Python loader, 0.04 s with it, on every plan run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """The document of a UTF-8 YAML file; ``yaml.YAMLError`` or ``UnicodeDecodeError`` when it is not one."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
