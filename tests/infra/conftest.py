"""The Pulumi program's package lives in infra/ (next to Pulumi.yaml, where
Pulumi runs it), not in the installed mlkit: put that folder on the path, as
Pulumi and infra/mock_preview.py do."""

from __future__ import annotations

import sys
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))
