"""``python -m guardreasoner proxy --upstream URL``: an OpenAI-compatible chat proxy that judges each request
and moderates each answer, streamed ones sentence by sentence (the app is ``guardreasoner.service.proxy``).

By default the guard runs with ``--reasoning off``: the screen alone, milliseconds per check, which is what a
check at every sentence end can afford."""

from __future__ import annotations

import argparse
import os

# Here rather than in the app's module, so that the CLI builds its parser without importing FastAPI.
POLICIES = ("block", "annotate")
REFUSAL = "Sorry, I can't help with that."
UPSTREAM_KEY_ENV = "GUARDREASONER_UPSTREAM_API_KEY"


def add_proxy_command(commands, parents: list, add_model_options) -> None:
    """The ``proxy`` subcommand, its model options as ``serve``'s (``add_model_options`` from the CLI)."""
    proxy = commands.add_parser(
        "proxy", parents=parents, help="an OpenAI-compatible /v1/chat/completions proxy in front of --upstream "
        "that judges each request and moderates each answer (streamed: sentence by sentence)")
    proxy.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL, e.g. http://127.0.0.1:8001/v1")
    proxy.add_argument("--prompt-policy", choices=POLICIES, default="block",
                       help="a harmful request: block (answer with a refusal) or annotate (forward it, say so)")
    proxy.add_argument("--upstream-timeout", type=float, default=60.0,
                       help="seconds the upstream may stay silent (connecting, answering, between chunks)")
    proxy.add_argument("--refusal", default=REFUSAL, help="the answer to a blocked request")
    add_model_options(proxy, reasoning_default="off")
    proxy.add_argument("--host", default="127.0.0.1", help="beyond loopback only with an API key")
    proxy.add_argument("--port", type=int, default=8080)
    proxy.add_argument("--api-key", action="append", help="the proxy's own keys (then the upstream gets "
                       f"{UPSTREAM_KEY_ENV}); without any, the client's key goes to the upstream")
    proxy.add_argument("--api-key-file", help="a file of the proxy's keys, one a line")
    proxy.add_argument("--max-item-chars", type=int, default=20_000, help="characters of the last user message")
    proxy.add_argument("--max-body-bytes", type=int, default=1_000_000)
    proxy.add_argument("--request-timeout", type=float, default=30.0, help="seconds one check may take")


def run_proxy(args: argparse.Namespace, load) -> int:
    """Load the guard (``load``: the CLI's loader) and serve the proxy on uvicorn."""
    import uvicorn

    from .service.proxy import ProxySettings, create_proxy_app
    from .service.security import check_exposure, load_keys
    from .service.serving import ServiceSettings

    keys = load_keys(args.api_key, args.api_key_file)
    check_exposure(args.host, keys)  # before the (slow) model load
    settings = ProxySettings(upstream=args.upstream, upstream_api_key=os.environ.get(UPSTREAM_KEY_ENV) or None,
                             prompt_policy=args.prompt_policy, upstream_timeout_s=args.upstream_timeout,
                             refusal=args.refusal)
    service = ServiceSettings(api_keys=keys, max_item_chars=args.max_item_chars, max_body_bytes=args.max_body_bytes,
                              request_timeout_s=args.request_timeout, max_new_tokens=args.max_new_tokens)
    app = create_proxy_app(load(args), settings, service)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
