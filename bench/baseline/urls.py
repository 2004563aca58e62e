"""No pages: the baseline is only the tutorial's WebSocket chat."""

urlpatterns: list = []
