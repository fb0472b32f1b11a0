"""Event-loop lag of one process co-hosting sessions that commit turns to PostgreSQL, store on and off the loop.

    .venv/bin/python benchmarks/bench_loop_lag.py [--sessions 20] [--turns 10] [--delay-ms 0,1]
                                                  [--store postgresql://postgres@127.0.0.1:5432/test]

Runs the ``Session`` class on one event loop as a ``SessionActor`` runs it: ``--sessions`` sessions, each sending
``--turns`` turns back to back (echo provider in-process, a short reply; every turn stores its user message, its
run, its reply and the run's final row), while a probe coroutine asks the loop to wake it every 1 ms and records
how late each wake-up is. Two stores, one after the other, each in a fresh schema:

- ``on the loop``: the statements run inline on the loop over one connection, as every store call did before
  ``Store.offload`` (the same SQL, only where it runs differs);
- ``off the loop``: ``PostgresStore`` as shipped: statements on the store's threads, a pool of ``--pool-max``.

``--delay-ms`` adds a TCP proxy on 127.0.0.1 (in its own thread and loop) that holds every packet that long each
way before passing it on: a PostgreSQL one network hop away, as on a cluster. 0 connects directly.
Prints one table: per store and delay, turns/s and the probe's lag p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import psycopg

from relay.config import ContextSettings, ProviderConfig
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest
from relay.session.balancer import Balancer
from relay.session.session import Session
from relay.store.postgres import PostgresStore

P = ParamSpec("P")
T = TypeVar("T")
PROBE_S = 0.001
ECHO = {"ttft_ms": 2, "tokens_per_s": 0}
WORDS = " ".join(f"word{k}" for k in range(12))


class StoreOnTheLoop(PostgresStore):
    """Before: every statement runs on the calling loop, as the sync store calls did (one connection)."""

    async def offload(self, statement: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return statement(*args, **kwargs)


class DelayProxy:
    """A TCP proxy that delivers every chunk ``delay_s`` after it arrived, each way, order kept: added latency,
    not a bandwidth limit. It runs its own loop in a thread so that its work is not the measured loop's."""

    def __init__(self, target_host: str, target_port: int, delay_s: float) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """End the connections still open (the server side's goodbye may still be in flight)."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _client(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        pumps = asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w), return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):  # cancelled by _shutdown only: the connection ends here
            await pumps

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((time.monotonic() + self.delay_s, data))
        finally:
            chunks.put_nowait((0.0, b""))
            await delivering


@contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A schema of its own for one measurement, dropped afterwards (the URL selects it by search_path)."""
    schema = f"bench_lag_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"))


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    """Ask to be woken every ``PROBE_S``; record how late each wake-up came."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(PROBE_S)
        lags.append(time.perf_counter() - asked - PROBE_S)


async def measure(store: PostgresStore, sessions: int, turns: int) -> dict[str, Any]:
    config = ProviderConfig(provider_id="echo", provider_type="echo", options=ECHO)
    runtime = ProviderRuntime(config, LoadGauge())
    balancer, context = Balancer(), ContextSettings()
    hosted = []
    for n in range(sessions):
        session_id = store.create_session("bench", f"lag-{n}")["session_id"]
        hosted.append(Session(store, session_id, "bench", context, balancer))

    async def converse(session: Session, turns: int) -> None:
        for turn in range(turns):
            request = ChatRequest(provider="echo", messages=[{"role": "user", "content": f"{turn} {WORDS}"}])
            async for _ in session.chat(request, runtime.stream):
                pass

    # One turn each before measuring: first-use costs (imports, the pool's connections) are not the steady state.
    await asyncio.gather(*(converse(session, 1) for session in hosted))
    lags: list[float] = []
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(lags, stop))
    started = time.perf_counter()
    await asyncio.gather(*(converse(session, turns) for session in hosted))
    elapsed = time.perf_counter() - started
    stop.set()
    await probing
    await runtime.aclose()
    stored = sum(store.count_messages(session.session_id) for session in hosted)
    assert stored == 2 * sessions * (turns + 1), f"{stored} messages stored, not {2 * sessions * (turns + 1)}"
    return {"turns/s": round(sessions * turns / elapsed, 1), **percentiles(lags)}


async def probe_alone(seconds: float) -> dict[str, Any]:
    """The floor: the probe on an otherwise idle loop, for the machine's own scheduling noise."""
    lags: list[float] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await probe(lags, stop)
    return {"turns/s": 0, **percentiles(lags)}


def percentiles(lags: list[float]) -> dict[str, Any]:
    ordered = sorted(lags)
    return {
        "lag p50 ms": round(statistics.median(ordered) * 1000, 2),
        "lag p99 ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "lag max ms": round(ordered[-1] * 1000, 2),
        "wake-ups": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--pool-max", type=int, default=4)
    parser.add_argument("--delay-ms", default="0,1", help="one-way delays to add, comma-separated; 0: direct")
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    host = urlsplit(args.store)
    rows = [{"store": "none (the probe alone)", "added RTT ms": 0, **asyncio.run(probe_alone(3.0))}]
    for delay_ms in (float(d) for d in args.delay_ms.split(",")):
        for label, make in (
            ("on the loop", lambda url: StoreOnTheLoop(url, pool_max=1, application_name="bench-lag")),
            ("off the loop", lambda url: PostgresStore(url, pool_max=args.pool_max, application_name="bench-lag")),
        ):
            with fresh_schema(args.store) as url, delayed(host, delay_ms) as port:
                store = make(through(url, port) if port else url)
                try:
                    result = asyncio.run(measure(store, args.sessions, args.turns))
                finally:
                    store.close()
            rows.append({"store": label, "added RTT ms": 2 * delay_ms, **result})
            print(rows[-1], flush=True)
    print()
    print(f"{args.sessions} sessions x {args.turns} turns on one loop; probe every {PROBE_S * 1000:g} ms")
    print(table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows])


@contextmanager
def delayed(host: SplitResult, delay_ms: float) -> Iterator[int | None]:
    """The port of a proxy adding ``delay_ms`` each way to ``host``; None (connect directly) for 0."""
    if delay_ms <= 0:
        yield None
        return
    with DelayProxy(host.hostname or "127.0.0.1", host.port or 5432, delay_ms / 1000) as proxy:
        yield proxy.port


if __name__ == "__main__":
    main()
