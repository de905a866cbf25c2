"""Write the service's OpenAPI document: ``python -m oscillink_core.app.service.openapi docs/openapi.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from .app import openapi_document

if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    out.write_text(openapi_document(), "utf-8")
    print(f"wrote {out}")
