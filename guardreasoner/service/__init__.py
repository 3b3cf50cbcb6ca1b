"""The guard as an HTTP service (FastAPI): ``create_app(guard, settings=ServiceSettings(...))``."""

from .app import create_app
from .serving import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
