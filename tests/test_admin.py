"""The admin manages rooms, members, devices and tokens (Django's test client, in-process)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from gateway.models import ApiToken, DeadLetter, Device, Room


@pytest.fixture
def staff(client, db):
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    return admin


def test_a_device_made_in_the_admin_can_log_in_to_the_broker(client, staff):
    room = Room.objects.create(name="plant")
    response = client.post(
        "/admin/gateway/device/add/", {"name": "sensor-9", "rooms": [room.pk], "is_active": "on", "password": "pw-9"}
    )
    assert response.status_code == 302, response.content
    device = Device.objects.get(name="sensor-9")
    assert device.check_password("pw-9") and not device.check_password("nope")
    assert device.password_hash.startswith("$7$101$")  # Mosquitto's format
    assert list(device.rooms.all()) == [room]
    response = client.post("/admin/gateway/device/add/", {"name": "no-password", "is_active": "on"})
    assert response.status_code == 200 and not Device.objects.filter(name="no-password").exists()


def test_rotating_a_room_address_in_the_admin(client, staff):
    room = Room.objects.create(name="team")
    before = room.email_token
    response = client.post(
        "/admin/gateway/room/", {"action": "rotate_email_token", "_selected_action": [room.pk]}, follow=True
    )
    assert response.status_code == 200
    room.refresh_from_db()
    assert room.email_token != before and len(room.email_token) == 16


def test_a_token_made_in_the_admin_is_shown_once(client, staff):
    response = client.post("/admin/gateway/apitoken/add/", {"user": staff.pk, "name": "ci"}, follow=True)
    token = ApiToken.objects.get(name="ci")
    assert token.key in response.content.decode()
    assert token.key not in client.get("/admin/gateway/apitoken/").content.decode()  # never again


def test_dead_letters_are_shown_to_an_operator_and_cannot_be_edited(client, staff):
    letter = DeadLetter.objects.create(
        topic="rooms/plant/in",
        payload=b'{"sender": 5}\xff',
        size=14,
        reason="failed 3 times",
        error="TypeError: no",
        attempts=3,
    )
    listing = client.get("/admin/gateway/deadletter/").content.decode()
    assert "rooms/plant/in" in listing and "failed 3 times" in listing
    page = client.get(f"/admin/gateway/deadletter/{letter.pk}/change/")
    assert page.status_code == 200
    assert "{&quot;sender&quot;: 5}\\xff" in page.content.decode()  # the payload, undecodable bytes escaped
    assert client.get("/admin/gateway/deadletter/add/").status_code == 403
    client.post(f"/admin/gateway/deadletter/{letter.pk}/change/", {"reason": "edited"})
    letter.refresh_from_db()
    assert letter.reason == "failed 3 times"
