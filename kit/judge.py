"""The LLM judge behind the ``judge`` comparator: grade an output against a rubric.

A scenario says::

    summarize.summary: {judge: "The summary names the customer's tier and the missing discount."}
    summarize.summary: {judge: "...", model: gpt-4o}          # another model than the workflow's

and the engine gives the comparator a :class:`Judge` built from the scenario's LLM
settings (``ctx.services["judge"]``)::

    judge = Judge.from_environment(task_environment(workflow, scenario.env, llm_settings))
    verdict, reason, call = judge.grade(rubric, output)

The judge runs in the coordinator, in-process (no kernel). Its call goes through
kit.llm's machinery: the model config of the workflow's ``model`` component (with
the environment's overrides), :func:`kit.llm.canonical_request` and
:func:`kit.llm.request_key` for the request and its key, kit.llm's provider
dispatch for the call, :func:`kit.llm.load_recordings` for replay and
:func:`kit.llm.write_recordings` for record. So the judge's verdict is recorded
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
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from kit import llm as _llm

__all__ = ["Judge", "Grade", "SYSTEM_PROMPT", "parse_verdict", "render_output"]

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
    from kit.comparators import jsonable

    if type(output).__module__.startswith("pandas") and type(output).__name__ == "DataFrame":
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


def _shorten(text: str, limit: int = MAX_REPLY_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_config(config: Any) -> dict:
    """The model config made usable, as kit.llm.load_config does for ``KIT_LLM_CONFIG``."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise _llm.LLMError(f"the judge's model config is not valid JSON: {exc}") from None
    if not isinstance(config, Mapping):
        raise _llm.LLMError(f"the judge's model config must be a mapping, got {type(config).__name__}")
    config = dict(config)
    if "api_key" in config:
        raise _llm.LLMError(
            "the judge's model config holds an api_key; keep the key in an environment variable "
            "and name that variable in `api_key_env`"
        )
    if not config.get("provider"):
        raise _llm.LLMError("the judge's model config names no provider (e.g. `provider: openai`)")
    params = config.get("params")
    if params is None:
        config["params"] = {}
    elif not isinstance(params, Mapping):
        raise _llm.LLMError(f"the judge's model config: params must be a mapping, got {params!r}")
    else:
        config["params"] = dict(params)
    return config


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
            self.config = _check_config(dict(_llm.DEFAULT_CONFIG) if config is None else config)
        except _llm.LLMError as exc:
            self.problem = str(exc)
        if self.problem is None and self.mode not in _llm.MODES:
            self.problem = f"the judge's LLM mode is {self.mode!r}; expected one of {', '.join(_llm.MODES)}"

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str], scenario: str | os.PathLike | None = None, **kwargs: Any
    ) -> "Judge":
        """A judge from the variables a run's kernels get (`kit.runner.task_environment`)."""
        return cls(
            config=env.get(_llm.CONFIG_ENV),
            mode=env.get(_llm.MODE_ENV) or "replay",
            recordings=env.get(_llm.RECORDINGS_ENV) or None,
            scenario=scenario,
            **kwargs,
        )

    @classmethod
    def unavailable(cls, reason: str, **kwargs: Any) -> "Judge":
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
            raise _llm.LLMError(self.problem)
        provider = str(self.config["provider"])
        model = model or self.config.get("model")
        if not model:
            raise _llm.LLMError("the judge has no model: set `model` in the model config or in the expectation")
        params = {**self.config["params"], **self.params}
        return _llm.canonical_request(provider, model, self.messages(rubric, output), params)

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
        except _llm.LLMError as exc:
            message = str(exc)
            return error(message if message.startswith("judge: ") else f"judge: {message}")
        key = _llm.request_key(request)
        call.update(request=request, key=key, model=request["model"], provider=request["provider"])

        t0 = time.perf_counter()
        if self.mode == "replay":
            recordings = _llm.load_recordings(self.recordings) if self.recordings else {}
            record = recordings.get(key)
            if record is None:
                return error(self._miss_message(request, key, recordings))
            response = record["response"]
            call.update(replayed=True, note="replayed")
        else:
            try:
                response = _llm._call_provider(request["provider"], request, self.config)
            except _llm.LLMError as exc:
                call["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                return error(f"judge: the model call failed: {exc}")
        call["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        call["response"] = response
        call["usage"] = _llm._usage(response)

        try:
            text = _llm.response_text(response)
        except _llm.LLMError as exc:
            return error(f"judge: {exc}")
        parsed = parse_verdict(text)
        if parsed is None:
            where = " (replayed)" if call["replayed"] else ""
            return error(
                'judge: the model\'s reply holds no verdict ({"verdict": "pass"|"fail", "reason": ...})'
                f"{where}: {_shorten(text)!r}"
            )
        verdict, reason = parsed

        if self.mode == "record":
            if self.recordings is None:
                call["note"] = "not recorded: the scenario names no recordings file"
            else:
                with self._lock:
                    written = _llm.write_recordings([call], self.recordings)
                call["recorded"] = bool(written)
                call["note"] = (
                    "recorded" if written else f"not recorded: {self.recordings} already holds this request"
                )
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
            k: r for k, r in recordings.items()
            if isinstance(r.get("request"), dict)
            and (r["request"].get("messages") or [{}])[0].get("content") == SYSTEM_PROMPT
        }
        if not judged:
            where = "does not exist" if not self.recordings.exists() else "holds no judge calls"
            return f"{head}; {self.recordings} {where}: {self._how_to_record()}"
        best_key, best_ratio, shown = _llm.nearest_diff(request, judged, MAX_DIFF_LINES)
        return (
            f"{head} among {len(judged)} judge recording{'s' if len(judged) != 1 else ''} in {self.recordings}; "
            f"{self._how_to_record()}.\nThe nearest (key {best_key[:12]}, similarity {best_ratio:.2f}) differs "
            "(- recorded, + requested):\n" + "\n".join(shown)
        )
