"""The LLM judge behind the ``judge`` comparator: grade an output against a rubric.

A scenario says::

    summarize.summary: {judge: "The summary names the customer's tier and the missing discount."}
    summarize.summary: {judge: "...", model: gpt-4o}          # another model than the workflow's

and the engine gives the comparator a :class:`Judge` built from the scenario's LLM
settings (``ctx.services["judge"]``)::

    judge = Judge.from_environment(task_environment(workflow, scenario.env, llm_settings))  # kit.execution.environment
    verdict, reason, call = judge.grade(rubric, output)

The judge runs in the coordinator, in-process (no kernel). Its call goes through
kit.llm's machinery: the model config of the workflow's ``model`` component (with
the environment's overrides, checked by `kit.kernel.calls.check_model_config`), the
canonical request and its key (`kit.kernel.recordings`), the provider registry
(`kit.kernel.providers.call_provider`), and recordings for replay and record. So the judge's verdict is recorded
like any other LLM call, in the scenario's recordings file, and a replayed
``kit test`` gives the same verdict without the network.

Modes (the scenario's, as for its run):

- ``live``: ask the model.
- ``record``: ask the model; keep the call in the recordings file (only when the
  reply held a verdict, so a malformed reply is not pinned forever).
- ``replay``: serve the verdict from the recordings; a miss is an ``error`` that
  says how to record it (``KIT_LLM_MODE=record kit test ...``). Since the output is
  part of the request, a changed output misses too; the message shows the
  difference from the nearest recorded judge request.

The model is asked for a strict JSON reply ``{"verdict": "pass"|"fail", "reason":
"..."}``; the reply is parsed leniently (the first JSON object holding a
``verdict`` anywhere in the text, e.g. inside a code fence). A reply without one
is an ``error`` showing the reply.

The call is made without touching the process's environment variables: the
config, the mode and the recordings are arguments here, never ``KIT_LLM_*``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from kit.base.display import brief, shorten
from kit.base.values import is_dataframe, jsonable
from kit.kernel import calls as kit_llm
from kit.kernel.providers import call_provider
from kit.kernel.recordings import (
    RecordingError,
    canonical_request,
    load_recordings,
    nearest_diff,
    request_key,
    write_recordings,
)
from kit.verification.comparators.base import Comparator, Outcome

__all__ = ["Judge", "JudgeComparator", "Grade", "SYSTEM_PROMPT", "parse_verdict", "render_output"]

#: The judge's instructions. Part of every judge request, hence of its recording key:
#: changing it makes every recorded verdict miss.
SYSTEM_PROMPT = (
    "You are a strict grader for the outputs of a workflow step. You are given a rubric and an "
    "output. Decide whether the output satisfies every requirement of the rubric; judge only "
    "against the rubric, and when in doubt, fail. Reply with a single JSON object and nothing else: "
    '{"verdict": "pass" or "fail", "reason": "one or two sentences saying why"}.'
)

MAX_REPLY_SHOWN = 500
MAX_DIFF_LINES = 30
_PASS = {"pass", "passed"}
_FAIL = {"fail", "failed"}


class Grade(NamedTuple):
    """A judge's answer; unpacks as ``verdict, reason, call``."""

    verdict: str  # pass, fail or error
    reason: str
    call: dict


# --------------------------------------------------------------------------- helpers


def render_output(output: Any) -> Any:
    """The output as the judge sees it: a JSON value (a DataFrame as its rows)."""
    if is_dataframe(output):
        output = output.to_dict(orient="records")
    return jsonable(output)


def parse_verdict(text: str) -> tuple[str, str] | None:
    """``(verdict, reason)`` from a reply: the first JSON object with a ``verdict`` anywhere in it.

    The verdict is ``pass`` or ``fail`` (case and a trailing ``-ed`` ignored). None when
    the reply holds no such object.
    """
    if not isinstance(text, str):
        return None
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            fields = {str(k).strip().lower(): v for k, v in obj.items()}
            raw = fields.get("verdict")
            if isinstance(raw, str):
                word = raw.strip().lower()
                reason = fields.get("reason")
                reason = "" if reason is None else (reason if isinstance(reason, str) else json.dumps(reason))
                if word in _PASS:
                    return "pass", reason.strip()
                if word in _FAIL:
                    return "fail", reason.strip()
        start = text.find("{", start + 1)
    return None


# --------------------------------------------------------------------------- the judge


class Judge:
    """Grades outputs against rubrics with one model config, mode and recordings file.

    - ``config``: the model config, a dict or its JSON (``task_environment(...)["KIT_LLM_CONFIG"]``).
    - ``mode``: ``live``, ``record`` or ``replay``.
    - ``recordings``: the scenario's recordings file (read in replay, appended to in record).
    - ``params``: sampling parameters for the judge's calls, over the config's ``params``.
    - ``scenario``: the scenario file, named in the "how to record" hint of a replay miss.

    A bad config or mode does not raise here: every :meth:`grade` then answers ``error``
    saying why, so one broken judge fails its expectations, not the whole suite.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | str | None = None,
        mode: str | None = "replay",
        recordings: str | os.PathLike | None = None,
        params: Mapping[str, Any] | None = None,
        scenario: str | os.PathLike | None = None,
    ):
        self.recordings = Path(recordings) if recordings else None
        self.params = dict(params or {})
        self.scenario = str(scenario) if scenario else None
        self.mode = str(mode or "replay").strip().lower()
        self.config: dict[str, Any] = {}
        self.problem: str | None = None
        self._lock = threading.Lock()
        try:
            self.config = kit_llm.check_model_config(
                dict(kit_llm.DEFAULT_CONFIG) if config is None else config, "the judge's model config"
            )
        except kit_llm.LLMError as exc:
            self.problem = str(exc)
        if self.problem is None and self.mode not in kit_llm.MODES:
            self.problem = f"the judge's LLM mode is {self.mode!r}; expected one of {', '.join(kit_llm.MODES)}"

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str], scenario: str | os.PathLike | None = None, **kwargs: Any
    ) -> Judge:
        """A judge from the variables a run's kernels get (`kit.execution.environment.task_environment`)."""
        return cls(
            config=env.get(kit_llm.CONFIG_ENV),
            mode=env.get(kit_llm.MODE_ENV) or "replay",
            recordings=env.get(kit_llm.RECORDINGS_ENV) or None,
            scenario=scenario,
            **kwargs,
        )

    @classmethod
    def unavailable(cls, reason: str, **kwargs: Any) -> Judge:
        """A judge that answers every grade with ``error`` and `reason` (its settings could not be made)."""
        judge = cls(**kwargs)
        judge.problem = f"judge: {reason}"
        return judge

    def __repr__(self) -> str:
        return (
            f"<Judge {self.config.get('provider')}/{self.config.get('model')} {self.mode}"
            f"{' ' + str(self.recordings) if self.recordings else ''}>"
        )

    # -- the request

    def messages(self, rubric: str, output: Any) -> list[dict]:
        """The judge's messages: the instructions, then the rubric and the output as JSON."""
        user = json.dumps(
            {"rubric": rubric, "output": render_output(output)}, indent=2, sort_keys=True, ensure_ascii=False
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def request(self, rubric: str, output: Any, model: str | None = None) -> dict:
        """The canonical request (as recorded and keyed) for grading `output` against `rubric`."""
        if self.problem:
            raise kit_llm.LLMError(self.problem)
        provider = str(self.config["provider"])
        model = model or self.config.get("model")
        if not model:
            raise kit_llm.LLMError("the judge has no model: set `model` in the model config or in the expectation")
        params = {**self.config["params"], **self.params}
        try:
            return canonical_request(provider, model, self.messages(rubric, output), params)
        except RecordingError as exc:
            raise kit_llm.LLMError(str(exc)) from None

    # -- grading

    def grade(self, rubric: str, output: Any, model: str | None = None) -> Grade:
        """``(verdict, reason, call)``: ``pass``/``fail`` with the model's reason, or ``error`` saying why.

        ``call`` is the judge's call as kit.llm spools one (``key``, ``request``,
        ``response``, ``mode``, ``replayed``, ``latency_ms``, ``usage``), plus
        ``recorded`` and a short ``note`` ("replayed", "recorded", ...), and ``error``.
        Never raises for a failed call.
        """
        call: dict[str, Any] = {
            "call_id": uuid.uuid4().hex,
            "judge": True,
            "mode": self.mode,
            "key": None,
            "provider": self.config.get("provider"),
            "model": model or self.config.get("model"),
            "request": None,
            "response": None,
            "replayed": False,
            "recorded": False,
            "latency_ms": None,
            "usage": None,
            "note": "",
            "error": None,
        }

        def error(message: str) -> Grade:
            call["error"] = message
            return Grade("error", message, call)

        try:
            request = self.request(rubric, output, model)
        except kit_llm.LLMError as exc:
            message = str(exc)
            return error(message if message.startswith("judge: ") else f"judge: {message}")
        key = request_key(request)
        call.update(request=request, key=key, model=request["model"], provider=request["provider"])

        t0 = time.perf_counter()
        if self.mode == "replay":
            recordings = load_recordings(self.recordings)
            record = recordings.get(key)
            if record is None:
                return error(self._miss_message(request, key, recordings))
            response = record["response"]
            call.update(replayed=True, note="replayed")
        else:
            try:
                response = call_provider(request["provider"], request, self.config)
            except kit_llm.LLMError as exc:
                call["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                return error(f"judge: the model call failed: {exc}")
        call["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        call["response"] = response
        call["usage"] = kit_llm.usage_of(response)

        try:
            text = kit_llm.response_text(response)
        except kit_llm.LLMError as exc:
            return error(f"judge: {exc}")
        parsed = parse_verdict(text)
        if parsed is None:
            where = " (replayed)" if call["replayed"] else ""
            return error(
                'judge: the model\'s reply holds no verdict ({"verdict": "pass"|"fail", "reason": ...})'
                f"{where}: {shorten(text, MAX_REPLY_SHOWN)!r}"
            )
        verdict, reason = parsed

        if self.mode == "record":
            if self.recordings is None:
                call["note"] = "not recorded: the scenario names no recordings file"
            else:
                with self._lock:
                    written = write_recordings([call], self.recordings)
                call["recorded"] = bool(written)
                call["note"] = "recorded" if written else f"not recorded: {self.recordings} already holds this request"
        return Grade(verdict, reason or "(the judge gave no reason)", call)

    # -- a replay miss

    def _how_to_record(self) -> str:
        target = self.scenario or "SCENARIO"
        return f"record it with `KIT_LLM_MODE=record kit test {target}`"

    def _miss_message(self, request: dict, key: str, recordings: dict[str, dict]) -> str:
        head = f"judge: replay miss: no recorded verdict for this rubric and output (key {key[:12]})"
        if self.recordings is None:
            return (
                f"{head}; the scenario names no recordings file (add `recordings: recordings/NAME.jsonl`), "
                f"then {self._how_to_record()}"
            )
        judged = {
            k: r
            for k, r in recordings.items()
            if isinstance(r.get("request"), dict)
            and (r["request"].get("messages") or [{}])[0].get("content") == SYSTEM_PROMPT
        }
        if not judged:
            where = "does not exist" if not self.recordings.exists() else "holds no judge calls"
            return f"{head}; {self.recordings} {where}: {self._how_to_record()}"
        best_key, best_ratio, shown = nearest_diff(request, judged, MAX_DIFF_LINES)
        return (
            f"{head} among {len(judged)} judge recording{'s' if len(judged) != 1 else ''} in {self.recordings}; "
            f"{self._how_to_record()}.\nThe nearest (key {best_key[:12]}, similarity {best_ratio:.2f}) differs "
            "(- recorded, + requested):\n" + "\n".join(shown)
        )


# --------------------------------------------------------------------------- the comparator


class JudgeComparator(Comparator):
    """An LLM grades the value against a rubric; its verdict is recorded and replayed.

    ``{judge: "The summary names the customer's tier.", model: gpt-4o}`` (``model`` is
    optional: the workflow's model by default). The grading is done by the
    :class:`kit.judge.Judge` the engine puts in ``ctx.services["judge"]``; without
    one the verdict is ``error``. The detail is the judge's reason.
    """

    name = "judge"
    options = frozenset({"model"})

    def check_spec(self, spec, ctx):
        rubric = spec["judge"]
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError(f"judge: expected a rubric (a non-empty string), got {brief(rubric)}")
        if "model" in spec and (not isinstance(spec["model"], str) or not spec["model"].strip()):
            raise ValueError(f"model: expected a model name, got {brief(spec['model'])}")

    def expected(self, spec, ctx):
        return jsonable(spec["judge"])

    def compare(self, spec, actual, ctx):
        rubric = spec["judge"]
        judge = ctx.services.get("judge") if isinstance(ctx.services, Mapping) else None
        if judge is None:
            return Outcome(
                "error",
                "no judge configured: the judge comparator needs a kit.judge.Judge in the "
                "CompareContext's services['judge'] (kit test provides one)",
                rubric,
                jsonable(actual),
            )
        if isinstance(actual, str) and actual.startswith("artifact:sha256:"):
            actual = ctx.load_table(actual)  # a table output: judge its rows, not its reference
        verdict_, reason, call = judge.grade(rubric, actual, model=spec.get("model"))
        note = call.get("note") if isinstance(call, Mapping) else None
        detail = f"{reason} ({note})" if note else reason
        return Outcome(verdict_, detail, rubric, jsonable(actual))
