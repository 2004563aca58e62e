from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from consumers import http as api
from gateway import attachments, views

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", views.chat_index, name="chat-index"),
    path("chat/<room:room>/", views.chat_room, name="chat-room"),
    path("api/rooms/", api.room_index, name="api-rooms"),
    path(
        "api/rooms/<room:room>/attachments/<uuid:attachment>/<str:name>",
        attachments.download,
        name="api-attachment",
    ),
    path("healthz", api.healthz, name="healthz"),
    path("metrics", api.prometheus, name="metrics"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
