"""NeMo Guardrails actions that call a GuardReasoner service's /v1/classify: the user's message alone for the
input rail (``prompt_harmfulness``), the bot's reply with it for the output rail (``response_harmfulness``).
Each returns True where the text may pass. NeMo loads this file from the config folder.

GUARDREASONER_URL (default http://127.0.0.1:8000) and GUARDREASONER_API_KEY (the service's key, if it has
keys) say where and how to call; GUARDREASONER_REASONING (off, auto or full; default: the service's mode)
picks the mode per call. A service that cannot be reached or answers an error blocks (fail closed)."""

from __future__ import annotations

import os

import httpx

try:
    from nemoguardrails.actions import action
except ImportError:  # read without NeMo installed (the repository's test calls the actions directly)
    def action(**_options):
        return lambda function: function


async def _judge(prompt: str, response: str | None, verdict: str) -> bool:
    url = os.environ.get("GUARDREASONER_URL", "http://127.0.0.1:8000").rstrip("/")
    key = os.environ.get("GUARDREASONER_API_KEY")
    body = {"items": [{"prompt": prompt, "response": response}]}
    if os.environ.get("GUARDREASONER_REASONING"):
        body["reasoning"] = os.environ["GUARDREASONER_REASONING"]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.post(f"{url}/v1/classify", json=body, headers=headers)
        answer.raise_for_status()
        label = answer.json()["results"][0]["verdicts"][verdict]["label"]
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    return label != "harmful"


def _user_message(context: dict | None) -> str:
    context = context or {}
    return context.get("user_message") or context.get("last_user_message") or ""


@action(is_system_action=True)
async def guardreasoner_check_input(context: dict | None = None) -> bool:
    prompt = _user_message(context)
    return not prompt.strip() or await _judge(prompt, None, "prompt_harmfulness")


@action(is_system_action=True)
async def guardreasoner_check_output(context: dict | None = None) -> bool:
    reply = (context or {}).get("bot_message") or ""
    if not reply.strip():
        return True
    return await _judge(_user_message(context) or reply, reply, "response_harmfulness")
