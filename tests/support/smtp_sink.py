"""A real SMTP server for the email test (aiosmtpd): STARTTLS required, then AUTH
(alerts/secret) required; every accepted message is printed as one JSON line."""
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
        }), flush=True)
        return "250 OK"


def check(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"alerts", b"secret")
    return AuthResult(success=ok, auth_data=auth_data)


port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
c = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
               authenticator=check, auth_require_tls=True, auth_required=True)
c.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
