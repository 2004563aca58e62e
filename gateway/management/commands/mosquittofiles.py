from pathlib import Path

from django.core.management.base import BaseCommand

from gateway.devices import mosquitto_files


class Command(BaseCommand):
    help = (
        "Write Mosquitto's password_file and acl_file from the devices and the adapter's account (MQTT_URL); "
        "then reload Mosquitto (kill -HUP)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--passwords", type=Path, required=True, help="path of the password_file")
        parser.add_argument("--acl", type=Path, required=True, help="path of the acl_file")

    def handle(self, *args, passwords: Path, acl: Path, **options) -> None:
        password_text, acl_text = mosquitto_files()
        passwords.write_text(password_text)
        passwords.chmod(0o600)
        acl.write_text(acl_text)
        self.stdout.write(f"Wrote {passwords} ({password_text.count(chr(10))} accounts) and {acl}.")
