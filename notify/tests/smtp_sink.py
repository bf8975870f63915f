"""A real SMTP server for lifeboat-notify's email tests (needs `pip install aiosmtpd`).

Usage: python3 smtp_sink.py OUT_DIR [RCPT_REPLY]

Listens on 127.0.0.1 on a free port and prints the port on the first line of
stdout. Each accepted message is parsed and saved as OUT_DIR/NNNN.json with
its envelope, subject, To header, text part and HTML part. With RCPT_REPLY
(e.g. "450" or "550"), every recipient is refused with that code instead.
With SMTP_SINK_AUTH=user:password in the environment, the server offers
AUTH PLAIN and LOGIN (without TLS: loopback only) and refuses mail from a
session that did not log in with exactly those credentials (535).
Exits when stdin closes, so it never outlives the test that started it.
"""

import asyncio
import email
import email.policy
import json
import os
import pathlib
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, out, rcpt_reply):
        self.out = out
        self.rcpt_reply = rcpt_reply
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return f"{self.rcpt_reply} mailbox {address} unavailable (test)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        self.count += 1
        path = self.out / f"{self.count:04}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.rename(path)
        return "250 Message accepted for delivery"


def authenticator(expected):
    user, _, password = expected.partition(":")

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return check


# Plain-text AUTH is what the tests want (loopback only): no warnings about it.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
logging_off = __import__("logging").getLogger("mail.log").setLevel(50)


def make_server(sink):
    expected = os.environ.get("SMTP_SINK_AUTH")
    if not expected:
        return SMTP(sink)
    return SMTP(
        sink,
        authenticator=authenticator(expected),
        auth_required=True,
        auth_require_tls=False,
    )


async def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rcpt_reply = sys.argv[2] if len(sys.argv) > 2 else None
    loop = asyncio.get_running_loop()
    sink = Sink(out, rcpt_reply)
    server = await loop.create_server(lambda: make_server(sink), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Stop when the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
