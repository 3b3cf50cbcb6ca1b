"""``python -m guardreasoner serve``: the guard service (typed classify routes, health, metrics) on uvicorn.
The app itself lives in ``guardreasoner.service``."""

from __future__ import annotations

from .cascade import RECOMMENDED
from .service import ServiceSettings, create_app
from .service.security import check_exposure

__all__ = ["ServiceSettings", "create_app", "serve"]


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, *, backend: str = "auto", mode: str | None = None,
          fallback: bool = True, max_new_tokens: int = 2048, temperature: float = 0.0,
          settings: ServiceSettings | None = None, served_name: str | None = None, reasoning: str = RECOMMENDED,
          screen: str | None = "shipped", operating_point: str | list[str] | None = None,
          policies: list[str] | None = None, releases: str | None = None) -> None:
    """Load the guard once and serve it. Refuses a non-loopback ``host`` unless ``settings`` has API keys.
    ``reasoning`` is the mode of requests that name none (default: the one measured best for the model, see
    ``screen.recommended_reasoning``); ``screen`` (default: the model's shipped one, where
    there is one) lets requests ask for auto or off; ``operating_point``: a folder ``calibrate`` wrote, or several:
    each is offered to requests by its name, and the first applies to requests that name none and run in its mode
    (a request's own ``thresholds`` override a point's). ``policies``: policy folders answered in every result's
    ``categories``. ``releases``: a folder ``training.loop`` ships to, whose current screen is served and followed
    without a restart."""
    import uvicorn

    from .loading import load_guard
    from .operating_point import load_operating_point

    settings = settings or ServiceSettings()
    check_exposure(host, settings.api_keys)  # before the (slow) model load
    folders = [operating_point] if isinstance(operating_point, str) else list(operating_point or [])
    points = [load_operating_point(folder) for folder in folders]  # a bad folder fails before the model loads
    guard = load_guard(model, backend, mode=mode, fallback=fallback, max_new_tokens=max_new_tokens,
                       temperature=temperature, batch_size=max(settings.batch_max_size, 1), reasoning=reasoning,
                       screen=screen, operating_point=folders[0] if folders else None, policies=policies)
    if guard.fallback_reason:
        print(f"note: serving the embedded model {guard.model_name} ({guard.fallback_reason})")
    settings.max_new_tokens = min(settings.max_new_tokens or max_new_tokens, max_new_tokens)
    app = create_app(guard, served_name, settings, operating_points=tuple(points), releases=releases)
    uvicorn.run(app, host=host, port=port, log_level="info")
