"""A local argilla-server for development and tests: its own virtualenv, Debian's Redis, and the ``sql`` search
engine (sql_search.py) in place of Elasticsearch. Production points ARGILLA_API_URL at a real deployment."""

from .manage import ServerConfig, add_user, start, status, stop

__all__ = ["ServerConfig", "add_user", "start", "status", "stop"]
