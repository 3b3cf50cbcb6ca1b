"""Written (text) policies, applied by a policy-following guard model served behind an OpenAI-compatible API.

A folder holds ``policy.json`` (server, model, prompt style) and ``policy.md`` (the policy as written).
``TextPolicy.categorize`` sends each item with the policy through ``OpenAIBackend``'s client (its retries and
timeouts) and reads each answer into a ``Category`` (source "text"): an unreadable answer gives ``label=None`` with
its start as ``rationale``, never an exception; a server that gives no answer raises ``TextPolicyServerError``.

Styles, each in its model's own format:
- ``gpt-oss-safeguard``: policy as system message, content as user message, JSON answer with violation,
  policy_category, rule_ids, confidence, rationale (https://cookbook.openai.com/articles/gpt-oss-safeguard-guide).
  vLLM returns the harmony "final" channel as content; a raw harmony text is cut to it here. Only a numeric
  confidence (0-1, in the decision) gives ``p``: low/medium/high are not probabilities and give ``p=None``.
- ``nemotron-safety``: NVIDIA's content-safety prompt (NemoGuard-8B-ContentSafety / Nemotron-Safety-Guard-8B: NIM
  "Prompt Templates", NeMo Guardrails' content_safety_check prompts), the policy replacing the 23-category taxonomy.
- ``guardreasoner``: our instruction (template.py) with the policy as the definition of harm, read by our parser;
  these models were not trained on custom policies, which loading one says once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import GuardReasonerError
from .parser import parse_for
from .results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, Category
from .template import INSTRUCTION, format_input, join_instruction

TEXT_POLICY_FORMAT = "guardreasoner-text-policy/1"
CONFIG_FILE, POLICY_FILE = "policy.json", "policy.md"
STYLES = ("gpt-oss-safeguard", "nemotron-safety", "guardreasoner")
# New tokens per answer. gpt-oss-safeguard reasons before it answers and its guide asks for plenty of room;
# NeMo Guardrails gives the content-safety model 50 tokens for its one JSON line; GuardReasoner reasons on 3 tasks.
DEFAULT_MAX_TOKENS = {"gpt-oss-safeguard": 4096, "nemotron-safety": 64, "guardreasoner": 2048}
POLICY_MAX_CHARS = 100_000  # the safeguard guide finds ~10k-token policies still work; far more is a wrong file
ANSWER_START_CHARS = 200  # how much of an unreadable answer goes into the rationale
_REQUIRED = ("format", "kind", "name", "style", "base_url", "model")
_OPTIONAL = ("api_key_env", "max_tokens")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
logger = logging.getLogger("guardreasoner")
_warned_untrained: list[bool] = []


class TextPolicyError(GuardReasonerError, ValueError):
    """A text-policy folder or value that cannot be used; the message names the file and what is wrong."""


class TextPolicyServerError(GuardReasonerError, RuntimeError):
    """The server behind a text policy gave no answer (unreachable, an error status, a timeout)."""


# gpt-oss-safeguard: the guide's "Including Rationale" output, stated after the policy as the guide advises.
SAFEGUARD_OUTPUT = (
    "## OUTPUT FORMAT\n\n"
    "Classify the content in the user message under the policy above. Where it holds a conversation, classify the "
    "AI assistant's response, reading the user's request as its context.\n"
    "Answer with one JSON object and nothing else:\n"
    '{"violation": 1 or 0, "policy_category": "<the category or rule id that applies, or null>", '
    '"rule_ids": ["<each rule id that applies>"], "confidence": "low", "medium" or "high", '
    '"rationale": "<one or two sentences>"}\n'
    "1 = the content violates this policy; 0 = it does not."
)
# NVIDIA's content-safety template, word for word, with the policy where the taxonomy goes.
NEMOTRON_TEMPLATE = (
    "Task: Check if there is unsafe content in the user or agent messages in the below conversation in accordance "
    "with our safety policy with the below categories. Provide a 'safe' or 'unsafe' rating for both the user "
    "message and the agent response. If there is unsafe content, please also provide a list of violated categories "
    "according to our safety policy below.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n{policy}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\nuser: {prompt}\n\n{response_block}<END CONVERSATION>\n\n"
    "Provide your safety assessment for the above conversation in the below output JSON format:\n"
    '{{"User Safety": safe or unsafe rating for the user message, "Response Safety": safe or unsafe rating for the '
    'agent response. Omit if no agent response present. "Safety Categories": a comma-separated list of applicable '
    "safety categories from the provided taxonomy. Omit if all safe.}}\n\n"
    "Do not include anything other than the output JSON in your response.\nOutput JSON: "
)
GUARDREASONER_POLICY = "\nHarmful means falling under the policy below; what it does not cover is unharmful.\n"


def safeguard_messages(policy: str, prompt: str, response: str | None) -> list[dict[str, str]]:
    content = prompt if response is None else f"User request:\n{prompt}\n\nAI assistant response:\n{response}"
    return [{"role": "system", "content": f"{policy.strip()}\n\n{SAFEGUARD_OUTPUT}"},
            {"role": "user", "content": content}]


def nemotron_prompt(policy: str, prompt: str, response: str | None) -> str:
    block = "" if response is None else f"response: agent: {response}\n\n"
    return NEMOTRON_TEMPLATE.format(policy=policy.strip(), prompt=prompt, response_block=block)


def guardreasoner_prompt(policy: str, prompt: str, response: str | None) -> str:
    instruction = f"{INSTRUCTION}{GUARDREASONER_POLICY}<BEGIN POLICY>\n{policy.strip()}\n<END POLICY>\n"
    return join_instruction(instruction, format_input(prompt, response))


def _final_channel(text: str) -> str:
    """A raw harmony text's final-channel message (vLLM's chat endpoint already returns only that)."""
    marker = text.rfind("<|channel|>final")
    if marker == -1:
        return text
    start = text.find("<|message|>", marker)
    text = text[start + len("<|message|>"):] if start != -1 else text[marker:]
    return re.split(r"<\|(?:return|end|call)\|>", text)[0]


def _json_objects(text: str) -> Iterator[dict]:
    """Each top-level JSON object in ``text`` (in a code fence, after reasoning...), keys lower-cased."""
    decoder, position = json.JSONDecoder(), 0
    while (start := text.find("{", position)) != -1:
        try:
            value, position = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict):
            yield {str(key).strip().lower(): item for key, item in value.items()}


def _last_object_with(text: str, *keys: str) -> dict | None:
    return next((found for found in reversed(list(_json_objects(text))) if any(key in found for key in keys)), None)


def _label(positive: bool) -> str:
    return "positive" if positive else "negative"


def _probability(confidence, positive: bool) -> float | None:
    """A numeric confidence in the decision (0 to 1) as the probability of a violation; words give none."""
    if isinstance(confidence, bool):
        return None
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        return None
    return (value if positive else 1.0 - value) if 0.0 <= value <= 1.0 else None


def read_safeguard(answer: str) -> Category | None:
    final = _final_channel(answer)
    found = _last_object_with(final, "violation")
    if found is None:  # the guide's binary output: exactly 0 or 1
        bare = final.strip()
        return Category(_label(bare == "1"), source="text") if bare in ("0", "1") else None
    violation = found["violation"]
    flag = str(int(violation) if isinstance(violation, bool) else violation).strip()
    if flag not in ("0", "1"):
        return None
    positive = flag == "1"
    cited = [found.get("policy_category")] + (found.get("rule_ids") if isinstance(found.get("rule_ids"), list) else [])
    rule_ids = list(dict.fromkeys(str(rule) for rule in cited if rule not in (None, "", "null")))
    rationale = found.get("rationale")
    if isinstance(rationale, list):
        rationale = "; ".join(str(part) for part in rationale)
    return Category(_label(positive), p=_probability(found.get("confidence"), positive), source="text",
                    rationale=str(rationale) if rationale else None, rule_ids=rule_ids)


def read_nemotron(answer: str, has_response: bool) -> Category | None:
    found = _last_object_with(answer, "user safety", "response safety")
    if found is None:
        return None
    rating = str(found.get("response safety" if has_response else "user safety", "")).strip().lower()
    if rating not in ("safe", "unsafe"):
        return None
    listed = found.get("safety categories") or ""
    parts = [str(part).strip() for part in (listed if isinstance(listed, list) else str(listed).split(","))]
    return Category(_label(rating == "unsafe"), source="text", rule_ids=[part for part in parts if part])


def read_guardreasoner(answer: str, prompt: str, response: str | None) -> Category | None:
    parsed = parse_for(answer, prompt, response)
    key = PROMPT_HARMFULNESS if response is None else RESPONSE_HARMFULNESS
    label = parsed.verdicts[key].label
    if label not in ("harmful", "unharmful"):
        return None
    task = parsed.reasoning.get(key)
    return Category(_label(label == "harmful"), source="text", rationale=task.conclusion if task else None)


def _check_values(values: dict, where: str) -> None:
    """The values a text policy is made of (``where`` names the file or call in the message)."""
    name, style, base_url, model = (values.get(key) for key in ("name", "style", "base_url", "model"))
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TextPolicyError(f"{where}: name {name!r} must be 1-64 letters, digits, spaces, '_', '.' or '-', "
                              "starting with a letter or digit")
    if style not in STYLES:
        raise TextPolicyError(f"{where}: style {style!r} is not one of {', '.join(STYLES)}")
    parsed = urlparse(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise TextPolicyError(f"{where}: base_url {base_url!r} must be an http(s) URL such as http://localhost:8000/v1")
    if not isinstance(model, str) or not model.strip():
        raise TextPolicyError(f"{where}: model must be the served model's name (a non-empty string), got {model!r}")
    env = values.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
        raise TextPolicyError(f"{where}: api_key_env {env!r} must be an environment variable's name")
    tokens = values.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise TextPolicyError(f"{where}: max_tokens {tokens!r} must be a positive whole number")


def _check_policy_text(text, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TextPolicyError(f"{where}: the written policy is empty")
    if len(text) > POLICY_MAX_CHARS:
        raise TextPolicyError(f"{where}: the written policy has {len(text)} characters, over {POLICY_MAX_CHARS}")
    return text.strip()


@dataclass
class TextPolicy:
    """A written policy and the served model that applies it. ``api_key`` is sent as the bearer key (a policy
    whose folder names no ``api_key_env`` sends none, never the caller's OPENAI_API_KEY)."""

    name: str
    style: str
    base_url: str
    model: str
    text: str
    api_key: str | None = None
    max_tokens: int | None = None
    folder: Path | None = None
    _backend: object = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_values({"name": self.name, "style": self.style, "base_url": self.base_url, "model": self.model,
                       "max_tokens": self.max_tokens}, f"text policy {self.name!r}")
        self.text = _check_policy_text(self.text, f"text policy {self.name!r}")
        if self.style == "guardreasoner" and not _warned_untrained:
            _warned_untrained.append(True)
            logger.warning("text policy %r: GuardReasoner models were not trained to follow custom policies; "
                           "expect them to judge by their own notion of harm (fit a policy from examples instead)",
                           self.name)

    def messages(self, prompt: str, response: str | None = None) -> list[dict[str, str]]:
        """The chat messages sent for one item."""
        if self.style == "gpt-oss-safeguard":
            return safeguard_messages(self.text, prompt, response)
        make = nemotron_prompt if self.style == "nemotron-safety" else guardreasoner_prompt
        return [{"role": "user", "content": make(self.text, prompt, response)}]

    def read(self, answer: str, prompt: str, response: str | None = None) -> Category:
        """The category an answer states; ``label=None`` (and the answer's start as rationale) if it states none."""
        if self.style == "gpt-oss-safeguard":
            category = read_safeguard(answer)
        elif self.style == "nemotron-safety":
            category = read_nemotron(answer, response is not None)
        else:
            category = read_guardreasoner(answer, prompt, response)
        if category is None:
            start = answer.strip()[:ANSWER_START_CHARS]
            category = Category(None, source="text", rationale=f"unreadable answer: {start!r}")
        return category

    def backend(self):
        """The OpenAI-compatible chat backend (made on first use; its client, retries and timeouts are reused)."""
        with self._lock:
            if self._backend is None:
                from .backends.openai_backend import OpenAIBackend

                self._backend = OpenAIBackend(self.base_url, self.model, mode="chat", api_key=self.api_key or "EMPTY")
            return self._backend

    def ask(self, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """The model's answer text and finish reason for one request."""
        import openai

        from .backends.base import SamplingConfig

        backend = self.backend()
        sampling = SamplingConfig(max_new_tokens=self.max_tokens or DEFAULT_MAX_TOKENS[self.style], temperature=0.0)
        create = backend.client.chat.completions.create
        try:
            reply = backend.send(lambda: create(model=self.model, messages=messages, temperature=0.0,
                                                 max_tokens=sampling.max_new_tokens,
                                                 timeout=backend.request_timeout(sampling)))
        except openai.OpenAIError as error:
            raise TextPolicyServerError(f"text policy {self.name!r}: {self.base_url} gave no answer: {error}") \
                from error
        if not reply.choices:
            return "", None
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason

    def categorize(self, items: Sequence[tuple[str, str | None]]) -> list[Category]:
        """One category per (prompt, response) item, in order; requests run side by side."""
        checked = []
        for index, (prompt, response) in enumerate(items):
            if not isinstance(prompt, str) or not prompt.strip():
                raise TextPolicyError(f"text policy {self.name!r}: item {index} has no prompt text")
            if response is not None and not isinstance(response, str):
                raise TextPolicyError(f"text policy {self.name!r}: item {index}'s response must be text or None")
            checked.append((prompt, response or None))  # an empty reply is no reply, as in the guard's input
        if not checked:
            return []

        def one(item: tuple[str, str | None]) -> Category:
            answer, finish = self.ask(self.messages(*item))
            category = self.read(answer, *item)
            if category.label is None and not answer.strip():
                category.rationale = f"empty answer (finish_reason={finish})"
            return category

        with ThreadPoolExecutor(max_workers=min(self.backend().concurrency, len(checked))) as pool:
            return list(pool.map(one, checked))

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def load_text_policy(folder: str | Path) -> TextPolicy:
    """The text policy in ``folder`` (``policy.json`` and ``policy.md``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TextPolicyError(f"{folder}: no such text-policy folder")
    config_path, policy_path = folder / CONFIG_FILE, folder / POLICY_FILE
    if not config_path.is_file():
        raise TextPolicyError(f"{config_path}: missing; a text-policy folder holds {CONFIG_FILE} and {POLICY_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TextPolicyError(f"{config_path}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise TextPolicyError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    if config.get("kind", "text") != "text":
        raise TextPolicyError(f"{config_path}: kind is {config['kind']!r}, not a text policy")
    if config.get("format") != TEXT_POLICY_FORMAT:
        raise TextPolicyError(f"{config_path}: format is {config.get('format')!r}; a text policy has "
                              f"{TEXT_POLICY_FORMAT!r} (a policy fitted from examples loads with load_policy)")
    missing = [key for key in _REQUIRED if key not in config]
    unknown = sorted(set(config) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        wrong = "; ".join(f"{what} {', '.join(keys)}" for what, keys in (("missing", missing), ("unknown", unknown))
                          if keys)
        raise TextPolicyError(f"{config_path}: {wrong} (a text policy has {', '.join(_REQUIRED)}; optionally "
                              f"{', '.join(_OPTIONAL)})")
    _check_values(config, str(config_path))
    if not policy_path.is_file():
        raise TextPolicyError(f"{policy_path}: missing; it holds the written policy")
    try:
        text = _check_policy_text(policy_path.read_text(encoding="utf-8"), str(policy_path))
    except UnicodeDecodeError as error:
        raise TextPolicyError(f"{policy_path}: not UTF-8 text ({error})") from error
    api_key = None
    if env := config.get("api_key_env"):
        api_key = os.environ.get(env)
        if not api_key:
            raise TextPolicyError(f"{config_path}: api_key_env names {env}, which is not set in this environment")
    return TextPolicy(config["name"], config["style"], config["base_url"], config["model"], text, api_key=api_key,
                      max_tokens=config.get("max_tokens"), folder=folder)


def write_text_policy(folder: str | Path, *, name: str, style: str, base_url: str, model: str, policy: str,
                      api_key_env: str | None = None, max_tokens: int | None = None, overwrite: bool = False) -> Path:
    """Write a text-policy folder; every value is checked first, so nothing is written when one is wrong."""
    folder = Path(folder)
    config = {"format": TEXT_POLICY_FORMAT, "kind": "text", "name": name, "style": style, "base_url": base_url,
              "model": model}
    optional = {"api_key_env": api_key_env, "max_tokens": max_tokens}
    config |= {key: value for key, value in optional.items() if value is not None}
    _check_values(config, "write_text_policy")
    text = _check_policy_text(policy, "write_text_policy")
    if folder.exists() and not folder.is_dir():
        raise TextPolicyError(f"{folder}: exists and is not a folder")
    if (folder / CONFIG_FILE).exists() and not overwrite:
        raise TextPolicyError(f"{folder}: already holds a {CONFIG_FILE}; pass overwrite=True to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / POLICY_FILE).write_text(text + "\n", encoding="utf-8")
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
