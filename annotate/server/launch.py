"""Entry point run by argilla-server's own virtualenv: registers the ``sql`` search engine, then runs the server
or its background worker. Started and stopped by ``python -m annotate.server`` (see manage.py).

    <argilla venv>/bin/python annotate/server/launch.py server --host 127.0.0.1 --port 6900
    <argilla venv>/bin/python annotate/server/launch.py worker
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sql_search  # noqa: E402,F401 - registers the engine before the server reads its settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "worker"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6900)
    args = parser.parse_args()
    if args.role == "server":
        import uvicorn

        uvicorn.run("argilla_server:app", host=args.host, port=args.port, access_log=False)
    else:
        from argilla_server.cli.worker import worker

        worker(queues=["default", "high"], num_workers=1)


if __name__ == "__main__":
    main()
