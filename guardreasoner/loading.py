"""``load_guard``: a model, its backend and (for reasoning ``auto``/``off``, or when asked) its screen, built in
one go into the ``Classifier`` asked for: a ``Guard``, or a ``Cascade`` around one."""

from __future__ import annotations

from .backends.base import SamplingConfig
from .cascade import RECOMMENDED, Cascade, check_mode
from .guard import DEFAULT_MAX_INPUT_TOKENS, Guard, make_backend
from .models import resolve_model

CHAT_TEMPLATE_ROOM = 256  # tokens a chat template adds around the user turn (Llama 3's header and date)


def load_guard(
    model: str | None = None,
    backend: str = "auto",
    *,
    mode: str | None = None,
    fallback: bool = False,
    fail_closed: bool = True,
    max_new_tokens: int = 2048,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_logprobs: int = 5,
    max_input_tokens: int | None = DEFAULT_MAX_INPUT_TOKENS,
    thresholds: dict[str, float] | None = None,
    reasoning: str = "full",
    screen: str | None = None,
    operating_point: str | None = None,
    policies: list[str] | None = None,
    **backend_options,
) -> Guard | Cascade:
    """Load a guard: a ``Guard`` for ``reasoning="full"`` without a screen, else a ``Cascade`` of that guard and
    its screen. ``model``: a released name (GuardReasoner-1B/3B/8B or its hub id; default 1B), a local folder,
    ``embedded`` (SmolLM2-135M-Instruct, offline), or an OpenAI-compatible URL. ``fallback=True``
    replaces a model the hub cannot deliver with the embedded one (the app and CLI do this). ``backend``: auto,
    ctranslate2, transformers, vllm or openai (see ``choose_backend``); ``backend_options`` go to it (e.g.
    ``compute_type="int8"`` for CTranslate2, ``batch_size``).
    ``reasoning``: full (reason on every item), off (the screen alone) or auto (the screen where it is sure,
    reasoning for the rest); ``screen`` is a screen folder (default: the one shipped for the model). With
    ``reasoning="full"`` a ``screen`` given is loaded too, so that ``with_reasoning`` can switch modes later;
    ``screen="shipped"`` loads the model's shipped screen where there is one (the app does this).
    ``reasoning="recommended"`` takes the mode measured best for the model (``off`` for the embedded guard,
    ``full`` for models without a screen; see ``screen.recommended_reasoning``): the CLI's and the service's
    default. ``operating_point`` is a folder ``python -m guardreasoner calibrate`` wrote for this model and mode:
    its maps and thresholds apply to every verdict (``thresholds`` given too override it per verdict, on the
    mapped probability), and each result names it. ``policies`` are policy folders (``python -m guardreasoner
    policy fit``, or text policies): each result's ``categories`` gives every policy's label and probability, in
    every reasoning mode (they need the encoder screen, which is then loaded in ``full`` too)."""
    if reasoning != RECOMMENDED:
        check_mode(reasoning)  # before loading anything; the screen is found below
    spec = resolve_model(model, fallback=fallback)
    if reasoning == RECOMMENDED:
        from .screen import recommended_reasoning

        reasoning = recommended_reasoning(spec.name)
    point = None
    if operating_point is not None:
        from .operating_point import check_fits, load_operating_point

        point = load_operating_point(operating_point)
        check_fits(point, spec.name, reasoning)  # before loading the model
        thresholds = {**point.thresholds, **(thresholds or {})}
    chosen_screen = None
    if screen == "shipped":
        from .screen import shipped_screen_folder

        screen = shipped_screen_folder(spec.name)
        screen = str(screen) if screen else None
    if reasoning != "full" or screen or policies:
        from .models import weights_id
        from .screen import default_screen_folder, load_screen

        chosen_screen = load_screen(screen or default_screen_folder(spec.name), model=spec.name,
                                    weights=lambda: weights_id(spec))
        if policies:
            from .policy import load_policies

            chosen_screen = load_policies(policies, chosen_screen)  # before the model: a bad folder fails fast
        if chosen_screen.feature_kind == "guard-state" and backend == "auto":
            backend = "transformers"  # the screen reads the model's hidden states, which only transformers exposes
    # vLLM's context must hold the longest input plus the answer (and the chat template's few tokens).
    context_tokens = (max_input_tokens or DEFAULT_MAX_INPUT_TOKENS) + max_new_tokens + CHAT_TEMPLATE_ROOM
    built = make_backend(spec, backend, mode=mode, context_tokens=context_tokens, **backend_options)
    guard = Guard(
        built,
        model_name=spec.name,
        sampling=SamplingConfig(max_new_tokens, temperature, top_p, top_logprobs),
        max_input_tokens=max_input_tokens,
        fail_closed=fail_closed,
        thresholds=thresholds,
        fallback_reason=spec.fallback_reason,
        # named only while its thresholds are the ones in force (as Guard.with_thresholds keeps it)
        operating_point=point.name if point and thresholds == point.thresholds else None,
        calibrations=point.calibrations if point else None,
    )
    if chosen_screen is None:
        return guard
    return Cascade(guard, chosen_screen.bind(guard), reasoning)
