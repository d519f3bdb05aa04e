#!/usr/bin/env python3
"""A real SMTP server nobody here wrote, for Missive's end-to-end tests: aiosmtpd (PyPI).

    python3 tests/python/smtpd.py --port PORT --cert CERT.pem --key KEY.pem \
        --username USER --password PASS --spool DIR

Listens on 127.0.0.1:PORT. STARTTLS is offered (with CERT and KEY) and required before
anything else; AUTH (PLAIN, LOGIN) is required before MAIL, offered only inside TLS, and
accepts exactly USER with PASS. Each accepted message is written to DIR as `NNNNNN.eml`
(the bytes as received, dot-unstuffed), with `NNNNNN.json` beside it holding the envelope
sender, the recipients, and whether the session was TLS and authenticated (and as whom).
Prints `ready` on stdout once listening; SIGTERM or SIGINT stops it cleanly (exit 0).
"""

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Spool:
    """The aiosmtpd handler: every message accepted goes to a file, written whole then renamed,
    so a reader never sees half a message."""

    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = f"{self.count:06}"
        login = getattr(session.auth_data, "login", None)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "login": login.decode("utf-8", "replace") if login is not None else None,
        }
        for suffix, data in (
            (".eml", envelope.original_content),
            (".json", json.dumps(meta, indent=2).encode()),
        ):
            partial = self.folder / f".{stem}{suffix}.partial"
            partial.write_bytes(data)
            os.replace(partial, self.folder / f"{stem}{suffix}")
        return "250 2.0.0 Ok: queued as " + stem


class Authenticator:
    """Accepts exactly one username and password, with either mechanism."""

    def __init__(self, username, password):
        self.username = username.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self.username)
            and hmac.compare_digest(auth_data.password, self.password)
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


async def serve(args):
    spool = Path(args.spool)
    spool.mkdir(parents=True, exist_ok=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    handler = Spool(spool)
    authenticator = Authenticator(args.username, args.password)

    def session():
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator,
            timeout=30,
        )

    # aiosmtpd warns on every login that `Session.login_data` (which it sets itself) is
    # deprecated; errors still show.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(session, "127.0.0.1", args.port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="the server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--spool", required=True, help="the folder messages are written to")
    asyncio.run(serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
