"""ably-python (the PyPI `ably` client, pinned in scripts/check-python.sh) idle against the server.

ably-python counts only protocol messages as signs of life (not WebSocket pings) and sends no
`heartbeats` parameter, so it lives on the server's HEARTBEAT frames: it drops a transport that hears
nothing for maxIdleInterval + realtime_request_timeout. With --max-idle-interval-ms 5000 and a 2 s
request timeout that is 7 s; the client idles for 16 s (more than two such limits) on a quiet channel
and must end on the same transport and connection, with no state change, still receiving.

Usage: idle.py PORT KEY (a server started with --max-idle-interval-ms 5000).
"""

import asyncio
import base64
import sys

import httpx
from ably import AblyRealtime

PORT, KEY = int(sys.argv[1]), sys.argv[2]
REQUEST_TIMEOUT_MS = 2000
IDLE_S = 16
CHANNEL = "python-idle"


async def main() -> None:
    # ably-python dials ws://{realtime_host}?… and ignores `port`: the port goes in the host.
    realtime = AblyRealtime(
        key=KEY,
        realtime_host=f"127.0.0.1:{PORT}",
        tls=False,
        fallback_hosts=[],
        realtime_request_timeout=REQUEST_TIMEOUT_MS,
    )
    changes = []
    try:
        await asyncio.wait_for(realtime.connection.once_async("connected"), 10)
        manager = realtime.connection.connection_manager
        connection_id, transport = manager.connection_id, manager.transport
        received = asyncio.Queue()
        await asyncio.wait_for(realtime.channels.get(CHANNEL).subscribe(received.put_nowait), 10)
        realtime.connection.on(lambda change: changes.append(f"{change.previous}->{change.current} {change.reason}"))

        await asyncio.sleep(IDLE_S)  # the idle window is what is under test

        assert changes == [], f"state changes while idle: {changes}"
        assert manager.connection_id == connection_id, "same connection id"
        assert manager.transport is transport, "same transport"
        # Over plain HTTP ably-python's REST refuses Basic auth: publish with httpx.
        basic = base64.b64encode(KEY.encode()).decode()
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{PORT}/channels/{CHANNEL}/messages",
                json={"name": "wake", "data": "after the idle window"},
                headers={"authorization": f"Basic {basic}"},
                timeout=10,
            )
        assert response.status_code == 201, f"publish answered {response.status_code}"
        message = await asyncio.wait_for(received.get(), 10)
        assert message.name == "wake", f"received {message.name}"
    finally:
        await asyncio.wait_for(realtime.close(), 10)
    print(f"ably-python stayed connected for {IDLE_S} s idle and still receives")


asyncio.run(main())
