"""Time limits on receiving a request's body, so that a client sending it slowly, or not at all,
cannot keep a request open (and, for a streamed body, its database connection): a body must not
stop arriving for ``body_timeout`` seconds, and once it has taken that long, must have arrived at
``body_min_rate`` bytes per second on average. A body of gigabytes may take as long as it needs
at any honest speed; a trickle cannot last. Past either limit the answer is a 408 (and the
connection is closed, its body being unread).

uvicorn closes an idle keep-alive connection after ``keep_alive_timeout``; it sets no time limit
on receiving headers, which is why README advises a reverse proxy on untrusted networks.
"""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsapi.errors import ApiError


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float, min_rate: int) -> None:
        self.app = app
        self.seconds = seconds
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        began = last = loop.time()
        received = 0
        complete = False

        async def receive_in_time() -> Message:
            nonlocal complete, last, received
            if complete:  # later receives wait for a disconnect, which may rightly take long
                return await receive()
            idle_deadline = last + self.seconds
            rate_deadline = began + self.seconds + received / self.min_rate
            try:
                async with asyncio.timeout_at(min(idle_deadline, rate_deadline)):
                    message = await receive()
            except TimeoutError:
                raise self._too_slow(idle_deadline <= rate_deadline) from None
            last = loop.time()
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)

    def _too_slow(self, idle: bool) -> ApiError:
        if idle:
            reason = f"nothing of it arrived for {self.seconds:g} s"
        else:
            reason = f"it arrived at less than {self.min_rate} bytes/s on average"
        error = ApiError(408, f"the request body came too slowly: {reason}")
        error.headers["Connection"] = "close"
        return error
