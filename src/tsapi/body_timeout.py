"""A deadline on receiving a request's body, so that a client sending it slowly, or not at all,
cannot keep a request open: past ``body_timeout`` seconds from its arrival, the read fails and
the answer is a 408 (and the connection is closed, its body being unread).

uvicorn closes an idle keep-alive connection after ``keep_alive_timeout``; it sets no time limit
on receiving headers, which is why README advises a reverse proxy on untrusted networks.
"""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsapi.errors import ApiError


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def receive_in_time() -> Message:
            nonlocal complete
            if complete:  # later receives wait for a disconnect, which may rightly take long
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                error = ApiError(408, f"the request body did not arrive within {self.seconds:g} s")
                error.headers["Connection"] = "close"
                raise error from None
            complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)
