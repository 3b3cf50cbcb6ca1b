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
          screen: str | None = "shipped", operating_point: str | None = None) -> None:
    """Load the guard once and serve it. Refuses a non-loopback ``host`` unless ``settings`` has API keys.
    ``reasoning`` is the mode of requests that name none (default: the one measured best for the model, see
    ``screen.recommended_reasoning``); ``screen`` (default: the model's shipped one, where
    there is one) lets requests ask for auto or off; ``operating_point``: a folder ``calibrate`` wrote, whose
    thresholds apply to every request (a request's own ``thresholds`` override them)."""
    import uvicorn

    from .loading import load_guard

    settings = settings or ServiceSettings()
    check_exposure(host, settings.api_keys)  # before the (slow) model load
    guard = load_guard(model, backend, mode=mode, fallback=fallback, max_new_tokens=max_new_tokens,
                       temperature=temperature, batch_size=max(settings.batch_max_size, 1), reasoning=reasoning,
                       screen=screen, operating_point=operating_point)
    if guard.fallback_reason:
        print(f"note: serving the embedded model {guard.model_name} ({guard.fallback_reason})")
    settings.max_new_tokens = min(settings.max_new_tokens or max_new_tokens, max_new_tokens)
    uvicorn.run(create_app(guard, served_name, settings), host=host, port=port, log_level="info")
