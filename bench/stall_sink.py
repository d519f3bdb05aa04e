"""An SMTP sink that stalls once, for bench/pacing.sh: it accepts every message (no TLS, no
AUTH), writes the time each MAIL command arrived (the moment a letter was handed over, as
the relay sees it) to a file, one line of milliseconds since the epoch per letter, and after
the AFTER-th message holds its replies to the end of data for every connection until STALL
seconds have passed. A client that counted its rate before the hand-over sends its next
letters all at once when the stall ends; one that counts at the hand-over keeps its pace.

Usage: python3 stall_sink.py PORT TIMES_FILE AFTER STALL_SECONDS
Prints "ready" once listening; runs until killed. Standard library only; 127.0.0.1 only.
"""

import asyncio
import sys
import time

PORT, TIMES, AFTER, STALL = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
state = {"messages": 0, "stall_until": 0.0}
times = open(TIMES, "w", buffering=1)


async def session(reader, writer):
    def reply(text):
        writer.write(text.encode() + b"\r\n")

    reply("220 stall-sink ESMTP")
    await writer.drain()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-stall-sink\r\n250 8BITMIME\r\n")
            elif verb == b"HELO":
                reply("250 stall-sink")
            elif verb == b"MAIL":
                times.write(f"{int(time.time() * 1000)}\n")
                reply("250 2.1.0 Ok")
            elif verb in (b"RCPT", b"RSET", b"NOOP"):
                reply("250 2.0.0 Ok")
            elif verb == b"DATA":
                reply("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                while (await reader.readline()) not in (b".\r\n", b".\n", b""):
                    pass
                state["messages"] += 1
                if state["messages"] == AFTER:
                    state["stall_until"] = time.monotonic() + STALL
                wait = state["stall_until"] - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                reply("250 2.0.0 Ok: queued")
            elif verb == b"QUIT":
                reply("221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                reply("502 5.5.2 Error: command not recognized")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
