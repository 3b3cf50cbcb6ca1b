"""An OpenAI-compatible chat server whose behaviour the test picks through the last user message, to stand
behind the proxy: its reply (``REPLIES``), streamed in small chunks, or a failure (``error``: a 429 in OpenAI's
shape; ``slow``: silent for seconds; ``malformed``: a broken event after one good chunk; ``stall``: one chunk,
then silence; ``forever``: chunks until the client leaves). It records what it was sent and when a stream it
was writing got closed."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

SAFE_REPLY = "Mix flour, water and salt. Let it rise overnight! Bake it hot, then let it cool."
HARMFUL_REPLY = ("Sure. First, buy the parts from a hardware shop. Then pack the explosive powder tightly into "
                 "the pipe. Finally, seal both ends.")
REPLIES = {"bread": SAFE_REPLY, "pipe": HARMFUL_REPLY}
CHUNK_CHARS = 7


def reply_for(prompt: str) -> str:
    return next((reply for word, reply in REPLIES.items() if word in prompt.lower()), "Hello there.")


def chunk(text: str | None = None, finish: str | None = None, role: bool = False) -> str:
    delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
    body = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "upstream-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


class ScriptedUpstream:
    def __init__(self, chunk_delay_s: float = 0.0):
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        self.stream_closed = threading.Event()
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        prompt = body["messages"][-1]["content"]
        if "error" in prompt:
            return JSONResponse({"error": {"message": "upstream rate limit reached", "type": "rate_limit"}}, 429)
        if "slow" in prompt:
            await asyncio.sleep(5)
        reply = reply_for(prompt)
        if not body.get("stream"):
            return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "upstream-model",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}
        return StreamingResponse(self.events(prompt, reply), media_type="text/event-stream")

    async def events(self, prompt: str, reply: str):
        try:
            yield chunk("", role=True)
            if "malformed" in prompt:
                yield chunk("Fine. ") + "data: {not json\n\n"
                return
            if "stall" in prompt:
                yield chunk("Fine. ")
                await asyncio.sleep(5)
            if "forever" in prompt:
                while True:
                    yield chunk("More words. ")
                    await asyncio.sleep(0.02)
            for start in range(0, len(reply), CHUNK_CHARS):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield chunk(reply[start:start + CHUNK_CHARS])
            yield chunk(finish="stop")
            yield "data: [DONE]\n\n"
        finally:
            self.stream_closed.set()
            self.closed_at = time.monotonic()
