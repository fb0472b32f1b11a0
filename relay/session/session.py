"""One session's turn logic, independent of where it runs (a Ray actor or in-process).

The rules from DESIGN.md live here: one turn at a time, the user message is
durable before the provider is called (every write is awaited, off the loop
through ``Store.offload``: a slow database never stalls the other sessions a
process hosts), and a run that ends early is stored
with its partial text: ``cancelled`` when its caller stopped it (a WebSocket
``cancel``, a closed stream or connection: the turn's consumer is cancelled),
``interrupted`` when it broke after content reached the caller (an upstream
failure here; a dead actor, recorded by whoever notices), ``failed`` before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from relay import events, tracing
from relay.config import ContextSettings
from relay.errors import Conflict, RelayError, as_relay_error
from relay.events import finish
from relay.reply import Reply
from relay.request import ChatRequest, Target, last_user_text
from relay.session.balancer import Balancer
from relay.session.cache import ResponseCache
from relay.session.context import (
    build_context,
    memory_prompt,
    parse_facts,
    parse_summary,
    split_history,
    summary_prompt,
)
from relay.session.runlog import RunLog, RunNotLive
from relay.session.steps import RunSteps
from relay.spend import CallCost, PriceTable, RunCost
from relay.store import Store, new_id
from relay.types import Batches, StreamOpener

__all__ = ["Session", "history_message"]

log = logging.getLogger("relay.session.session")

_HISTORY_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "is_error", "thinking_blocks")


def history_message(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the provider sees it: bookkeeping fields dropped."""
    return {key: stored[key] for key in _HISTORY_KEYS if stored.get(key) is not None}


def _stored_state(store: Store, session_id: str) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """A stored session's messages, head run and row: one trip to the store's threads, not three."""
    return store.messages(session_id), store.latest_run(session_id), store.get_session(session_id) or {}


def _branch_messages(store: Store, session_id: str, parent: str) -> list[dict[str, Any]]:
    return store.chain_messages(session_id, store.run_chain(session_id, parent))


def _open_run(store: Store, session_id: str, user_id: str, run_id: str, request: ChatRequest) -> None:
    """The request's messages, then the run's row: one trip to the store's threads for a turn's first writes."""
    for message in request.messages:
        store.append_message(session_id, message, run_id)
    store.start_run(
        run_id,
        session_id,
        provider=request.provider,
        model=request.model,
        input_messages=request.messages,
        parent_run_id=request.parent_run_id,
        user_id=user_id,
        key_id=request.key_id,
    )


class Session:
    def __init__(
        self,
        store: Store,
        session_id: str,
        user_id: str,
        context: ContextSettings | None = None,
        balancer: Balancer | None = None,
        prices: PriceTable | None = None,
        on_cost: Callable[[CallCost], None] | None = None,
    ) -> None:
        """``prices`` costs every model call (none: every run is unpriced); ``on_cost`` sees each call's cost (the
        Prometheus counters on a cluster). The session starts empty, as a new one is: ``restore`` reads back a stored
        one's history, off the loop, before its first turn."""
        self.store = store
        self.prices = prices or PriceTable()
        self.on_cost = on_cost
        # Runs still open: a summary that finishes in time adds its cost here; a later side call goes to the store.
        self._costs: dict[str, RunCost] = {}
        # Shared by the process's sessions, so that least-busy routing counts all of its streams.
        self.balancer = balancer or Balancer()
        self.cache = ResponseCache(store)
        self.session_id = session_id
        self.user_id = user_id
        self.context = context or ContextSettings()
        self.history: list[dict[str, Any]] = []
        self.head: str | None = None  # the run whose chain ``history`` is
        self.summary: str | None = None
        self.summary_topics: list[str] = []
        self.summary_covers = 0  # conversation messages the summary stands for
        self.runs_waiting = 0
        self.last_active = time.monotonic()
        self._run_lock = asyncio.Lock()  # FIFO: concurrent sends run in arrival order
        self._summarizing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.live_runs: dict[str, RunLog] = {}
        self._driving: dict[str, asyncio.Task[Any]] = {}  # run id: the task that consumes it (what cancel stops)

    async def restore(self) -> None:
        """Read a stored session back (a new one skips this: three queries fewer before its first token)."""
        messages, head, row = await self.store.offload(_stored_state, self.store, self.session_id)
        self.history, self.head = [history_message(m) for m in messages], head
        self.summary = row.get("summary")
        self.summary_topics = row.get("summary_topics") or []
        self.summary_covers = row.get("summary_seq") or 0

    @property
    def busy(self) -> bool:
        """A turn runs or waits, or a summary or memory is still being written: not safe to passivate."""
        return self.runs_waiting > 0 or bool(self._background)

    async def settled(self) -> None:
        """Wait for background summaries and memory extraction."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def chat(self, request: ChatRequest, open_stream: StreamOpener) -> Batches:
        if self.runs_waiting >= self.context.max_queued_runs:
            raise Conflict(
                f"Session '{self.session_id}' is busy: {self.runs_waiting} runs are queued; retry when one ends",
                param="session_id",
                code="conversation_busy",
            )
        self.runs_waiting += 1
        task = asyncio.current_task()
        if request.run_id and task is not None:
            self._driving[request.run_id] = task
        try:
            # aclosing: a caller that stops early must still run the inner finally (the run is persisted there)
            run = tracing.traced_run(
                functools.partial(self._run, open_stream=open_stream),
                request,
                session_id=self.session_id,
                user_id=self.user_id,
            )
            async with self._run_lock, contextlib.aclosing(run) as batches:
                async for batch in batches:
                    yield batch
        finally:
            self.runs_waiting -= 1
            self.last_active = time.monotonic()
            if request.run_id:
                self._driving.pop(request.run_id, None)

    def cancel(self, run_id: str) -> bool:
        """Stop a run from outside its stream (``POST /v1/responses/{id}/cancel``): its upstream call is cancelled and
        the run is recorded ``cancelled``, as when its consumer goes away."""
        task = self._driving.get(run_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def _history_for(self, request: ChatRequest) -> list[dict[str, Any]]:
        """A run continues its parent's chain: the session's own history when the parent is its latest run, else the
        branch read from the store by parent pointers (two answers to one response never see each other's run)."""
        parent = request.parent_run_id
        if parent is None or parent == self.head:
            return self.history if request.store else list(self.history)
        stored = await self.store.offload(_branch_messages, self.store, self.session_id, parent)
        return [history_message(m) for m in stored]

    async def _run(self, request: ChatRequest, open_stream: StreamOpener) -> Batches:
        run_id = request.run_id or new_id("run")
        # A branch: its context is its parent's chain, which the session's summary does not cover.
        branch = request.parent_run_id is not None and request.parent_run_id != self.head
        history = await self._history_for(request)
        if request.store:  # awaited: the user message is durable before the provider is called
            try:
                await self.store.offload(_open_run, self.store, self.session_id, self.user_id, run_id, request)
            except asyncio.CancelledError:  # stopped before it began: its row must not stay ``running``
                await self.store.offload(self.store.finish_run, run_id, status="cancelled", finish_reason="cancelled")
                raise
            self.history, self.head = history, run_id  # the session moves to the branch this run extends
        history.extend(request.messages)
        run_log = self.live_runs[run_id] = RunLog(run_id)
        cost = self._costs[run_id] = RunCost()
        started = time.monotonic()
        ttft: float | None = None
        status = "interrupted"
        reply = Reply()  # the whole run, as its clients and its stored row see it
        served = Target(request.provider, request.model, request.pool_app)
        try:
            yield run_log.add([events.status("started", run_id=run_id)])
            older, recent = split_history(history, self.context.history_max_runs, self.context.history_max_tokens)
            if not branch and self._needs_summary(older):
                yield run_log.add(
                    [events.status("summarizing", f"summarizing {len(older) - self.summary_covers} older messages")]
                )
                await self._summary_within(older, open_stream, run_id)
            summary = None if branch else self.summary  # the session's summary covers its own history, not a branch's
            context = build_context(history, recent, summary, self.summary_topics, await self._facts(request))
            if request.instructions:
                context = [{"role": "system", "content": request.instructions}, *context]
            steps = RunSteps(
                request,
                context,
                open_stream,
                commit=functools.partial(self._commit, run_id=run_id, history=history, store=request.store),
                balancer=self.balancer,
                cache=self.cache,
            )
            # aclosing: a run stopped mid-step still commits that step's messages (the steps' own finally)
            async with contextlib.aclosing(steps.batches()) as batches:
                async for target, batch in batches:
                    served = target
                    for event in batch:  # one walk per token: the reply, the run's cost and its first token
                        reply.add(event)
                        kind = event["type"]
                        if kind == "usage":  # one per model call, priced at the target that served it
                            self._charge(cost.add_usage(self.prices, target.provider, target.model, event))
                        if ttft is None and kind not in ("status", "finish"):
                            ttft = time.monotonic() - started
                    if batch[-1]["type"] == "finish":  # the session sends the run's own, with its id and metrics
                        batch = [event for event in batch if event["type"] != "finish"]
                        if not batch:
                            continue
                    yield run_log.add(batch)
            status = "completed" if reply.error is None else "failed"
            if status == "completed" and self.context.memory_provider and request.memory and request.store:
                self._spawn(self._remember(last_user_text(request.messages), open_stream, run_id))
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"  # only the run's consumer cancels it (ray.cancel, or closing the generator)
            raise
        except Exception as exc:
            error = as_relay_error(exc)
            if not isinstance(exc, RelayError):
                log.exception("run %s failed", run_id)
            # cut off after content reached the caller: interrupted, partial text kept; before it: failed
            status = "interrupted" if reply.text or reply.tool_calls else "failed"
            reply.add(error.to_event())
            reply.finish_reason = "error"
            yield run_log.add([error.to_event()])
        finally:
            del self._costs[run_id]
            final = self._finish(run_id, reply, started, ttft, served, cost)
            if status == "cancelled":
                final["reason"] = "cancelled"
            run_log.add([final])
            run_log.close()
            if request.store:  # awaited: the run's row is final before its last batch leaves
                await self._persist(run_id, status, reply, started, ttft, served, run_log.events, cost)
            del self.live_runs[run_id]
        yield [final]

    async def _commit(
        self, message: dict[str, Any], *, run_id: str, history: list[dict[str, Any]], store: bool
    ) -> None:
        """A step's assistant or tool message: history first, then durable (unless the run keeps nothing)."""
        history.append(message)
        if store:
            await self.store.offload(self.store.append_message, self.session_id, message, run_id)

    async def tail(self, run_id: str, after: int) -> Batches:
        """A running run's events after ``after``, then live; ``RunNotLive`` when it is not running here."""
        run_log = self.live_runs.get(run_id)
        if run_log is None:
            raise RunNotLive(run_id)
        async for batch in run_log.tail(after):
            yield batch

    # context: summaries and memories

    def _needs_summary(self, older: list[dict[str, Any]]) -> bool:
        return bool(self.context.summary_provider) and len(older) > self.summary_covers

    async def _summary_within(self, older: list[dict[str, Any]], open_stream: StreamOpener, run_id: str) -> None:
        """Start (or join) the summary of ``older``; wait for it at most ``summary_wait_s``, then go on without it.
        Its cost is the run's that started it."""
        if self._summarizing is None or self._summarizing.done():
            self._summarizing = self._spawn(self._summarize(list(older), open_stream, run_id))
        await asyncio.wait({self._summarizing}, timeout=self.context.summary_wait_s)

    async def _summarize(self, older: list[dict[str, Any]], open_stream: StreamOpener, run_id: str) -> None:
        assert self.context.summary_provider is not None
        request = ChatRequest(
            provider=self.context.summary_provider,
            model=self.context.summary_model,
            messages=summary_prompt(self.summary, older[self.summary_covers :]),
        )
        try:
            summary, topics = parse_summary(await self._side_call(request, open_stream, run_id))
        except Exception:
            log.exception("summarizing session %s failed; the turn goes on without it", self.session_id)
            return
        self.summary, self.summary_topics, self.summary_covers = summary, topics, len(older)
        await self.store.offload(self.store.set_summary, self.session_id, summary, topics, len(older))

    async def _facts(self, request: ChatRequest) -> list[str]:
        if not (self.context.memory_provider and request.memory):
            return []
        rows = await self.store.offload(self.store.memories, self.user_id, limit=self.context.memory_max_facts)
        return [m["content"] for m in rows]

    async def _remember(self, user_text: str, open_stream: StreamOpener, run_id: str) -> None:
        assert self.context.memory_provider is not None
        request = ChatRequest(
            provider=self.context.memory_provider, model=self.context.memory_model, messages=memory_prompt(user_text)
        )
        try:
            facts = parse_facts(await self._side_call(request, open_stream, run_id))
        except Exception:
            log.exception("extracting memories for user %s failed", self.user_id)
            return
        await self.store.offload(self.store.add_memories, self.user_id, facts, self.session_id)

    async def _side_call(self, request: ChatRequest, open_stream: StreamOpener, run_id: str) -> str:
        """The whole text of a summary or memory call, its cost added to the run that caused it: to the open run's
        total, or once that is stored, to its row (a memory call starts after its run ends)."""
        reply = Reply()
        try:
            async for batch in open_stream(request):
                reply.extend(batch)
        finally:
            if reply.usage:
                call = RunCost()
                self._charge(call.add_usage(self.prices, request.provider, request.model, reply.usage))
                if run_id in self._costs:
                    self._costs[run_id].merge(call)
                else:
                    await self.store.offload(self.store.add_run_cost, run_id, call.to_dict())
        return reply.content

    def _charge(self, call: CallCost) -> None:
        if self.on_cost is not None:
            self.on_cost(call)

    def _finish(
        self, run_id: str, reply: Reply, started: float, ttft: float | None, served: Target, cost: RunCost
    ) -> dict[str, Any]:
        total = time.monotonic() - started
        tokens = reply.usage.get("output_tokens", 0)
        return finish(
            reply.finish_reason or ("error" if reply.error else "stop"),
            run_id=run_id,
            session_id=self.session_id,
            metrics={
                "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
                "total_ms": round(total * 1000, 2),
                "tokens_per_s": round(tokens / total, 2) if tokens and total > 0 else None,
                "model": served.model,
                "provider": served.provider,
                # what the ingress settles the run's budgets with (relay.http.budgets)
                "cost_usd": cost.usd,
                "unpriced": cost.unpriced,
            },
        )

    async def _persist(
        self,
        run_id: str,
        status: str,
        reply: Reply,
        started: float,
        ttft: float | None,
        served: Target,
        run_events: list[dict[str, Any]],
        cost: RunCost,
    ) -> None:
        """The run's row; its messages were committed step by step (``relay.session.steps``)."""
        await self.store.offload(
            self.store.finish_run,
            run_id,
            status=status,
            output=reply.content,
            reasoning=reply.reasoning_content,
            tool_calls=reply.tool_call_list(),
            citations=reply.citations,
            usage=reply.usage,
            finish_reason=reply.finish_reason if status == "completed" else ("error" if reply.error else "cancelled"),
            error=reply.error,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            total_ms=(time.monotonic() - started) * 1000,
            provider=served.provider,
            model=served.model,
            events=run_events,
            cost=cost.to_dict(),
        )
