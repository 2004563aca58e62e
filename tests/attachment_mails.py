"""Mails with files, shaped as their clients send them (MIME structure, encodings, file-name styles),
each with the attachments it must give: (name, type, inline)."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def png(width: int = 4, height: int = 3) -> bytes:
    """A real PNG (a red rectangle): browsers decode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def b64(content: bytes) -> str:
    return base64.encodebytes(content).decode().replace("\n", "\r\n")


def message_id() -> str:
    return f"<{uuid.uuid4().hex}@example.com>"


def thunderbird_pdf(to: str, sender: str = "alice@example.com", pdf: bytes = PDF, image: bytes | None = None) -> str:
    """Thunderbird: multipart/mixed, a format=flowed text, the PDF (and a photo) as ``attachment``."""
    photo = ""
    if image is not None:
        photo = (
            '--------------B0undaryTB\r\nContent-Type: image/png; name="chart.png"\r\n'
            'Content-Disposition: attachment; filename="chart.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{b64(image)}\r\n"
        )
    return (
        f"Message-ID: {message_id()}\r\nDate: Sat, 5 Dec 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        "User-Agent: Mozilla Thunderbird\r\nContent-Language: en-US\r\n"
        f"To: {to}\r\nFrom: Alice Example <{sender}>\r\nSubject: The offer\r\n"
        'Content-Type: multipart/mixed;\r\n boundary="------------B0undaryTB"\r\n\r\n'
        "This is a multi-part message in MIME format.\r\n"
        "--------------B0undaryTB\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\nHere is the offer.\r\n\r\n"
        '--------------B0undaryTB\r\nContent-Type: application/pdf; name="Angebot.pdf"\r\n'
        'Content-Disposition: attachment; filename="Angebot.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{b64(pdf)}\r\n{photo}--------------B0undaryTB--\r\n"
    )


def outlook_inline_image(to: str, sender: str = "alice@example.com") -> str:
    """Outlook: an HTML mail whose logo is a ``cid:`` image in multipart/related, next to a plain part."""
    cid = "image001.png@01DA1B2C.3D4E5F60"
    return (
        f"From: Bob Builder <{sender}>\r\nTo: {to}\r\nSubject: Status\r\nMessage-ID: {message_id()}\r\n"
        "MIME-Version: 1.0\r\nX-Mailer: Microsoft Outlook 16.0\r\nThread-Index: AdoBAgMEBQYHCAkK\r\n"
        'Content-Type: multipart/related;\r\n\tboundary="_004_rel_"; type="multipart/alternative"\r\n\r\n'
        '--_004_rel_\r\nContent-Type: multipart/alternative; boundary="_000_alt_"\r\n\r\n'
        '--_000_alt_\r\nContent-Type: text/plain; charset="us-ascii"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
        "All green.\r\n\r\n[cid:image001.png@01DA1B2C.3D4E5F60]\r\n\r\n"
        '--_000_alt_\r\nContent-Type: text/html; charset="us-ascii"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
        f'\r\n<html><body><p>All green.</p><p><img src=3D"cid:{cid}" width=3D"4"></p></body></html>\r\n\r\n'
        "--_000_alt_--\r\n\r\n"
        '--_004_rel_\r\nContent-Type: image/png; name="image001.png"\r\nContent-Description: image001.png\r\n'
        'Content-Disposition: inline; filename="image001.png"; size=100\r\n'
        f"Content-ID: <{cid}>\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64(png())}\r\n--_004_rel_--\r\n"
    )


def iphone_photo(to: str, sender: str = "alice@example.com") -> str:
    """Apple Mail on a phone: the photo ``inline`` between two text parts."""
    return (
        "Content-Type: multipart/mixed; boundary=Apple-Mail-1A2B\r\nMIME-Version: 1.0 (1.0)\r\n"
        f"Subject: Look\r\nFrom: Carol <{sender}>\r\nTo: {to}\r\nMessage-Id: {message_id()}\r\n"
        "X-Mailer: iPhone Mail (21A329)\r\n\r\n"
        "--Apple-Mail-1A2B\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        "The view\r\n"
        "--Apple-Mail-1A2B\r\nContent-Type: image/png; name=IMG_0042.PNG; x-apple-part-url=A1B2-C3D4\r\n"
        "Content-Disposition: inline; filename=IMG_0042.PNG\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{b64(png(8, 6))}\r\n"
        "--Apple-Mail-1A2B\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        "\r\nSent from my iPhone\r\n--Apple-Mail-1A2B--\r\n"
    )


def scanner(to: str, sender: str = "scanner@example.com") -> str:
    """A multifunction printer's scan-to-mail: no subject, no text, one PDF."""
    return (
        f"From: {sender}\r\nTo: {to}\r\nMessage-ID: {message_id()}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="SCAN_BOUNDARY"\r\n\r\n'
        '--SCAN_BOUNDARY\r\nContent-Type: application/pdf; name="scan0001.pdf"\r\n'
        'Content-Disposition: attachment; filename="scan0001.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{b64(PDF)}\r\n--SCAN_BOUNDARY--\r\n"
    )


def gmail_encoded_names(to: str, sender: str = "alice@example.com") -> str:
    """Gmail's RFC 2231 ``filename*`` and Outlook's RFC 2047 ``name``: non-ASCII file names."""
    return (
        f"MIME-Version: 1.0\r\nFrom: Dora <{sender}>\r\nDate: Sat, 5 Dec 2026 09:00:00 +0100\r\n"
        f"Message-ID: {message_id()}\r\nSubject: Invoices\r\nTo: {to}\r\n"
        'Content-Type: multipart/mixed; boundary="000000000000abcd"\r\n\r\n'
        '--000000000000abcd\r\nContent-Type: multipart/alternative; boundary="000000000000ef01"\r\n\r\n'
        '--000000000000ef01\r\nContent-Type: text/plain; charset="UTF-8"\r\n\r\nBoth invoices\r\n\r\n'
        '--000000000000ef01\r\nContent-Type: text/html; charset="UTF-8"\r\n\r\n'
        '<div dir="ltr">Both invoices</div>\r\n\r\n'
        "--000000000000ef01--\r\n"
        "--000000000000abcd\r\nContent-Type: application/pdf; name*=UTF-8''Rechnung%20M%C3%A4rz.pdf\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\r\n"
        f"Content-Transfer-Encoding: base64\r\nX-Attachment-Id: f_lq1\r\n\r\n{b64(PDF)}\r\n"
        "--000000000000abcd\r\n"
        "Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;\r\n"
        '\tname="=?iso-8859-1?Q?B=FCro.docx?="\r\nContent-Disposition: attachment;\r\n'
        '\tfilename="=?iso-8859-1?Q?B=FCro.docx?="\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(b'PK-not-really')}\r\n--000000000000abcd--\r\n"
    )


def forwarded_with_pdf(to: str, sender: str = "alice@example.com") -> str:
    """A forward as an attached ``message/rfc822`` that itself carries a PDF."""
    inner = (
        "From: Eve <eve@example.org>\r\nSubject: Contract\r\nMessage-ID: <inner@example.org>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="inner"\r\n\r\n'
        "--inner\r\nContent-Type: text/plain\r\n\r\nSigned copy attached.\r\n"
        '--inner\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="contract.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(PDF)}\r\n--inner--\r\n"
    )
    return (
        f"From: <{sender}>\r\nTo: {to}\r\nSubject: Fwd: Contract\r\nMessage-ID: {message_id()}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        "--outer\r\nContent-Type: text/plain\r\n\r\nFYI\r\n"
        '--outer\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="Contract.eml"\r\n\r\n'
        f"{inner}\r\n--outer--\r\n"
    )


def hostile_names(to: str, sender: str = "alice@example.com") -> str:
    """A path in a file name, an HTML page and an SVG (documents a browser would run)."""
    parts = [
        ('application/octet-stream; name="x"', 'attachment; filename="../../etc/passwd"', b"root:x:0:0"),
        ("text/html", 'attachment; filename="page.html"', b"<script>alert(1)</script>"),
        ("image/svg+xml", 'inline; filename="logo.svg"', b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>'),
    ]
    body = "".join(
        f"--B\r\nContent-Type: {kind}\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(content)}\r\n"
        for kind, disposition, content in parts
    )
    return (
        f"From: <{sender}>\r\nTo: {to}\r\nSubject: Files\r\nMessage-ID: {message_id()}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee files\r\n'
        f"{body}--B--\r\n"
    )


def with_files(to: str, files: list[tuple[str, bytes]], sender: str = "alice@example.com") -> str:
    """A plain mail with these (name, bytes) attached as octet streams."""
    body = "".join(
        f'--F\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(content)}\r\n"
        for name, content in files
    )
    return (
        f"From: <{sender}>\r\nTo: {to}\r\nSubject: Files\r\nMessage-ID: {message_id()}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="F"\r\n\r\n--F\r\nContent-Type: text/plain\r\n\r\nFiles\r\n'
        f"{body}--F--\r\n"
    )


# Each mail, a piece of the text it must give, and its attachments: (name, type, inline).
CORPUS = [
    (thunderbird_pdf, "The offer", [("Angebot.pdf", "application/pdf", False)]),
    (outlook_inline_image, "Status", [("image001.png", "image/png", True)]),
    (iphone_photo, "Look", [("IMG_0042.PNG", "image/png", True)]),
    (scanner, "📎 scan0001.pdf", [("scan0001.pdf", "application/pdf", False)]),
    (
        gmail_encoded_names,
        "Invoices",
        [
            ("Rechnung März.pdf", "application/pdf", False),
            ("Büro.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", False),
        ],
    ),
    (forwarded_with_pdf, "Contract", [("contract.pdf", "application/pdf", False)]),
    (
        hostile_names,
        "Files",
        [
            ("_.._etc_passwd", "application/octet-stream", False),
            ("page.html", "text/html", False),
            ("logo.svg", "image/svg+xml", True),
        ],
    ),
]
