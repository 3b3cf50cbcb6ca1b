"""The guard as an HTTP service (FastAPI): ``create_app(guard, settings=ServiceSettings(...))``."""

from .app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
