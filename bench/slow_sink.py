"""A slow SMTP sink for the benchmarks: it accepts every message (no TLS, no AUTH) and writes
the time each MAIL command arrived (the moment a letter was handed over, as the relay sees it)
to a file, one line of milliseconds since the epoch per letter. Two ways to be slow:

- after the AFTER-th message it holds its replies to the end of data, on every connection,
  until STALL seconds have passed (bench/pacing.sh: a client that counted its rate before the
  hand-over sends its next letters all at once when the stall ends; one that counts at the
  hand-over keeps its pace);
- every reply waits DELAY_MS first, as if the relay were that many milliseconds of round trip
  away (bench/latency.sh: what each round trip of a letter's conversation costs).

Usage: python3 slow_sink.py PORT TIMES_FILE AFTER STALL_SECONDS [DELAY_MS]
(AFTER = 0: never stall.) Prints "ready" once listening; runs until killed. Standard library
only; 127.0.0.1 only.
"""

import asyncio
import sys
import time

PORT, TIMES, AFTER, STALL = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
DELAY = float(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0.0
state = {"messages": 0, "stall_until": 0.0}
times = open(TIMES, "w", buffering=1)


class Lines:
    """The client's lines, each with the time it arrived: with DELAY, a line is answered only
    DELAY after it arrived, so commands sent together (PIPELINING) share one round trip."""

    def __init__(self, reader):
        self.reader, self.buffer, self.queue = reader, b"", []

    async def next(self):
        while not self.queue:
            chunk = await self.reader.read(65536)
            if not chunk:
                return b"", 0.0
            arrived = time.monotonic()
            self.buffer += chunk
            *lines, self.buffer = self.buffer.split(b"\n")
            self.queue.extend((line + b"\n", arrived) for line in lines)
        return self.queue.pop(0)


async def answer_after(arrived):
    wait = arrived + DELAY - time.monotonic()
    if DELAY and wait > 0:
        await asyncio.sleep(wait)


async def session(reader, writer):
    def reply(text):
        writer.write(text.encode() + b"\r\n")

    lines = Lines(reader)
    reply("220 slow-sink ESMTP")
    await writer.drain()
    try:
        while True:
            line, arrived = await lines.next()
            if not line:
                return
            await answer_after(arrived)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-slow-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"HELO":
                reply("250 slow-sink")
            elif verb == b"MAIL":
                times.write(f"{int(time.time() * 1000)}\n")
                reply("250 2.1.0 Ok")
            elif verb in (b"RCPT", b"RSET", b"NOOP"):
                reply("250 2.0.0 Ok")
            elif verb == b"DATA":
                reply("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                while True:
                    line, arrived = await lines.next()
                    if line in (b".\r\n", b".\n", b""):
                        break
                await answer_after(arrived)
                state["messages"] += 1
                if AFTER and state["messages"] == AFTER:
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
    except ConnectionError:
        return
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
