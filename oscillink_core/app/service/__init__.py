"""``oscillink serve``: the self-hosted reranking service (FastAPI on uvicorn).

>>> from oscillink_core.app.service import Settings, create_app
>>> app = create_app(Settings(state="memory", keys_file="/nonexistent/keys.json"))
>>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1"))[:3]
['/v1/bundle', '/v1/chain/receipt', '/v1/feedback']
"""

from .app import create_app
from .settings import Settings

__all__ = ["create_app", "Settings"]
