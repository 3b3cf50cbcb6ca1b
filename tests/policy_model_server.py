"""An OpenAI-compatible chat server standing in for a policy-following guard model (gpt-oss-safeguard, NVIDIA's
content-safety models, GuardReasoner), for the text-policy tests. It records every request (body and bearer key) and
answers with ``answer(body)``: the message content (a str), a whole assistant message (a dict, e.g. with vLLM's
``reasoning_content``), or an HTTP status (an int) to fail with, in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class PolicyModelServer:
    def __init__(self, answer: Callable[[dict], str | dict | int], name: str = "policy-model"):
        self.answer, self.name = answer, name
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/chat/completions")(self.chat)

    def models(self):
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "tests"}]}

    async def chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        if body.get("model") != self.name:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not served",
                                           "type": "not_found"}}, 404)
        answer = self.answer(body)
        if isinstance(answer, int):
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, answer)
        message = {"role": "assistant"} | ({"content": answer} if isinstance(answer, str) else answer)
        return {"id": "chatcmpl-policy", "object": "chat.completion", "created": 1, "model": self.name,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
