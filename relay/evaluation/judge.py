"""``llm-judge``: the prompt a judging model reads, and how its verdict is read back.

The judge is asked for one JSON object, ``{"pass", "score", "reason"}``. Models
wrap it in prose or code fences, so the last JSON object with a ``pass`` or
``score`` key wins; failing that, a bare ``PASS`` or ``FAIL`` word does. A reply
with neither is a failed score that says so, never a silent pass.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.evaluation.dataset import Row
from relay.evaluation.plan import Candidate
from relay.evaluation.scoring import Score, Scorer

__all__ = ["JUDGE_SYSTEM", "LLMJudge", "judge_messages", "parse_verdict"]

JUDGE_SYSTEM = (
    "You grade a model's response against a rubric. Read the rubric, the input and the response, then reply "
    'with one JSON object and nothing else: {"pass": true or false, "score": a number from 0 to 1, '
    '"reason": "one sentence"}.'
)
_WORD = re.compile(r"\b(PASS|FAIL)\b")
_decoder = json.JSONDecoder()


def judge_messages(rubric: str, row: Row, output: str) -> list[dict[str, Any]]:
    expected = "" if row.expected is None else str(row.expected)
    parts = [f"Rubric:\n{rubric}", f"Input:\n{row.prompt}"]
    if expected:
        parts.append(f"Reference answer:\n{expected}")
    parts.append(f"Response:\n{output}")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def _objects(text: str) -> list[dict[str, Any]]:
    found = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = _decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def parse_verdict(text: str, name: str = "llm-judge") -> Score:
    verdicts = [o for o in _objects(text) if "pass" in o or "score" in o]
    if verdicts:
        verdict = verdicts[-1]
        raw_score = verdict.get("score")
        score = min(1.0, max(0.0, float(raw_score))) if isinstance(raw_score, int | float) else None
        raw_pass = verdict.get("pass")
        if isinstance(raw_pass, str):
            raw_pass = raw_pass.strip().lower() in ("true", "yes", "pass")
        passed = bool(raw_pass) if raw_pass is not None else (score is not None and score >= 0.5)
        if score is None:
            score = 1.0 if passed else 0.0
        return Score(name, score, passed, str(verdict.get("reason") or "").strip() or "no reason given")
    words = _WORD.findall(text.upper())
    if words:
        passed = words[-1] == "PASS"
        return Score(name, 1.0 if passed else 0.0, passed, f"judge said {words[-1]} without the JSON verdict")
    snippet = " ".join(text.split())[:120]
    return Score(name, 0.0, False, f"judge reply unreadable: {snippet!r}")


class LLMJudge(Scorer):
    """Scored by ``judge`` (a candidate of its own) against ``rubric``; the runner makes the call."""

    kind = "llm-judge"
    needs_provider = True

    def __init__(self, judge: Candidate, rubric: str, max_tokens: int = 512) -> None:
        if not rubric.strip():
            raise ValueError("llm-judge needs a rubric")
        super().__init__(f"{self.kind}:{judge.provider}/{judge.model}:{rubric}")
        self.judge = judge
        self.rubric = rubric
        self.max_tokens = max_tokens

    def messages(self, output: str, row: Row) -> list[dict[str, Any]]:
        return judge_messages(self.rubric, row, output)

    def verdict(self, text: str) -> Score:
        return parse_verdict(text, self.name)
