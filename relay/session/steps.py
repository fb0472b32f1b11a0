"""A run's steps: one model call, then the server-side tools it asked for, until it answers.

Each step sends the conversation so far (the context plus earlier steps'
assistant and tool messages) through the fallback chain, or through a route's
pools. When the model calls tools that this turn enabled server-side, they run
concurrently (``relay.tools.execute``: a timeout, an output cap, every failure
caught), each result goes back as a ``tool`` message and the next step starts.
The run ends when the model answers without calling an enabled tool, when it
calls a tool only the client can answer (the call passes through, finish
``tool_calls``), or after ``max_steps`` model calls (a ``warning`` with code
``max_steps``, finish ``length``).

Every assistant and tool message is committed (history and store) as its step
ends, cut short or not, so the stored history stays valid for the next request:
a tool that never finished is answered with an error message.

Across steps, tool-call indices are offset so that they stay unique in the run;
each step's ``usage`` event counts that model call, and the run spends their sum.

The steps report through what they yield, nothing else: each batch comes with
the target (provider and model) that served it, and the run's finish reason is
in the ``finish`` events they pass on (the session sends the run's own finish).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from relay.events import cache_hit, finish, tool_execution_end, tool_execution_start
from relay.providers.resilience import with_fallback
from relay.reply import Reply
from relay.request import ChatRequest, Target
from relay.session.balancer import Balancer
from relay.session.cache import ResponseCache, cache_key, replayable
from relay.tools import ToolOutcome, execute
from relay.types import Batch, Batches, StreamOpener

__all__ = ["RunSteps"]

_CANCELLED = "Error: the run stopped before the tool finished"


class RunSteps:
    def __init__(
        self,
        request: ChatRequest,
        messages: list[dict[str, Any]],
        open_stream: StreamOpener,
        *,
        commit: Callable[[dict[str, Any]], Awaitable[None]],
        balancer: Balancer,
        cache: ResponseCache,
    ) -> None:
        self.request = request
        self.messages = list(messages)  # the context, then each step's assistant and tool messages
        self.open_stream = open_stream
        self.commit = commit
        self.balancer = balancer
        self.cache = cache
        self._served = Target(request.provider, request.model, request.pool_app)
        self._offset = 0  # tool-call indices used by earlier steps

    async def batches(self) -> AsyncIterator[tuple[Target, Batch]]:
        """The run's events, each batch with the target that served it (one generator: this is the token path)."""
        policy = self.request.cache
        key = None
        if policy is not None:
            req = self.request
            key = cache_key(policy.route, req.model, self.messages, req.params, req.provider_options)
            hit = await self.cache.get(key)
            if hit is not None:
                events, age_s = hit
                batch = [cache_hit(policy.route, round(age_s, 3)), *events]
                hit_reply = Reply()
                hit_reply.extend(batch)
                await self._commit_step(hit_reply)
                yield self._served, batch
                return
        toolset = self.request.tools
        max_steps = toolset.max_steps if toolset else 1
        recorded: list[dict[str, Any]] = []
        for step in range(1, max_steps + 1):
            step_reply = Reply()
            try:
                async for batch in self._model_call():
                    step_reply.extend(batch)
                    batch = self._adjusted(batch)
                    if key is not None:
                        recorded.extend(batch)
                    yield self._served, batch
            finally:
                await self._commit_step(step_reply)
            calls = step_reply.tool_call_list()
            server = [call for call in calls if toolset and call["function"]["name"] in toolset]
            if step_reply.error is not None or not server:
                break
            async for batch in self._execute(server, step):
                yield self._served, batch
            if len(server) < len(calls):
                return  # the other calls are the client's: the run ends on finish tool_calls
            if step == max_steps:
                warning = f"stopped after {max_steps} model calls; the model still wanted tools"
                yield self._served, [{"type": "warning", "message": warning, "code": "max_steps"}, finish("length")]
                return
        if key is not None and policy is not None and step == 1 and step_reply.error is None:
            events = replayable(recorded, step_reply.finish_reason)
            if events is not None:
                await self.cache.put(policy, key, events)

    async def _model_call(self) -> Batches:
        request, opener = self.request, self.open_stream
        if request.route is not None:
            request, opener = await self.balancer.plan(request), self.balancer.tracked(opener)
        async for attempt, batch in with_fallback(request.for_pool(self.messages), opener):
            self._served = Target(attempt.provider, attempt.model, attempt.pool_app)
            yield batch

    def _adjusted(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._offset:
            return batch
        offset = self._offset
        return [e | {"index": e["index"] + offset} if e["type"].startswith("tool-call-") else e for e in batch]

    async def _commit_step(self, step_reply: Reply) -> None:
        if step_reply.text or step_reply.tool_calls:
            message = step_reply.assistant_message()
            await self.commit(message)
            self.messages.append(message)
        self._offset += len(step_reply.tool_calls)

    async def _execute(self, calls: list[dict[str, Any]], step: int) -> Batches:
        """Run the calls concurrently: their starts, then each end as it comes; their messages in call order."""
        toolset = self.request.tools
        assert toolset is not None
        outcomes: dict[str, ToolOutcome] = {}
        tasks: dict[asyncio.Task[ToolOutcome], dict[str, Any]] = {}
        for call in calls:
            function = call["function"]
            tool = toolset.get(function["name"])
            assert tool is not None
            tasks[asyncio.create_task(execute(tool, function["arguments"]))] = call
        try:
            starts = [
                tool_execution_start(call["id"], call["function"]["name"], call["function"]["arguments"], step)
                for call in calls
            ]
            yield starts
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                ends = []
                for task in sorted(done, key=lambda t: calls.index(tasks[t])):
                    call, outcome = tasks[task], task.result()
                    outcomes[call["id"]] = outcome
                    ends.append(
                        tool_execution_end(
                            call["id"],
                            call["function"]["name"],
                            result=outcome.result,
                            error=outcome.error,
                            duration_ms=outcome.duration_ms,
                            step=step,
                        )
                    )
                yield ends
        finally:
            for task in tasks:
                task.cancel()
            for call in calls:
                outcome = outcomes.get(call["id"])
                message: dict[str, Any] = {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": outcome.for_model() if outcome else _CANCELLED,
                }
                if outcome is None or outcome.error is not None:
                    message["is_error"] = True
                await self.commit(message)
                self.messages.append(message)
