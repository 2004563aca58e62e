"""WhiteNoise in an async middleware chain.

WhiteNoise's middleware is sync-only, and one sync middleware makes Django run every request's whole
chain in a thread of its own and call the async views back on the event loop: two thread hops and a
thread per request for every API post. Finding a static file is a dictionary lookup (production has
no autorefresh), so the async path does it on the loop and awaits the rest of the chain directly.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
