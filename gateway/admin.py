from django import forms
from django.contrib import admin, messages

from .models import ApiToken, Attachment, DeadLetter, Device, Message, Room, new_secret


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "public", "email_open", "last_activity", "last_id", "created_at"]
    list_filter = ["public", "email_open"]
    search_fields = ["name"]
    filter_horizontal = ["members"]
    readonly_fields = ["last_id", "last_activity", "created_at"]
    actions = ["rotate_email_token"]

    @admin.action(description="Give the selected rooms new secret mail addresses")
    def rotate_email_token(self, request, queryset) -> None:
        for room in queryset:
            room.email_token = new_secret()
            room.save(update_fields=["email_token"])
        self.message_user(request, f"{queryset.count()} secret addresses changed.", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "sender", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["text", "sender"]


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    """Mailed files: to find and delete (each file goes with its row), not to edit. Those without a
    message belong to a post that failed half-way (docs/email.md, "Attachments")."""

    list_display = ["created_at", "room", "name", "content_type", "size", "message"]
    list_filter = [("message", admin.EmptyFieldListFilter)]
    search_fields = ["name", "room__name"]
    fields = ["created_at", "room", "message", "name", "content_type", "size"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "name", "created_at"]
    search_fields = ["user__username", "name"]
    exclude = ["key", "created_at"]  # the key is made for the user and shown once, on creation

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(request, f"The new token is {obj.key}: copy it now, it is not shown again.")


class DeviceForm(forms.ModelForm):
    password = forms.CharField(
        required=False, widget=forms.PasswordInput, help_text="Set a new password (required for a new device)"
    )

    class Meta:
        model = Device
        fields = ["name", "rooms", "is_active"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("password"):
            self.add_error("password", "A new device needs a password.")
        return cleaned

    def save(self, commit: bool = True) -> Device:
        if self.cleaned_data.get("password"):
            self.instance.set_password(self.cleaned_data["password"])
        return super().save(commit)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    form = DeviceForm
    list_display = ["name", "is_active", "created_at"]
    filter_horizontal = ["rooms"]
    search_fields = ["name"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Messages the gateway set aside: to look at (and delete once dealt with), not to edit."""

    list_display = ["created_at", "source", "topic", "size", "reason", "attempts"]
    list_filter = ["source"]
    search_fields = ["topic", "reason", "error"]
    fields = ["created_at", "source", "topic", "size", "payload_text", "reason", "error", "attempts"]
    readonly_fields = fields

    @admin.display(description="payload")
    def payload_text(self, letter: DeadLetter) -> str:
        """The payload as text, undecodable bytes escaped."""
        return bytes(letter.payload).decode("utf-8", "backslashreplace")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
