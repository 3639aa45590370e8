"""The judge comparator: an LLM grades an output against a rubric; its verdict is recorded and replayed.

Real HTTP against the local OpenAI-compatible server (tests/llm_server.py), in-process.
"""

from __future__ import annotations

import json
import os

import pytest
from llm_server import llm_server  # noqa: F401 - the fixture

from kit.kernel.recordings import load_recordings, request_key
from kit.spec.scenario import Expectation
from kit.verification import comparators as C
from kit.verification.comparators import CompareContext, evaluate
from kit.verification.comparators.judge import SYSTEM_PROMPT, Judge, parse_verdict

RUBRIC = "The summary names the customer's tier and the missing discount."
SUMMARY = "Gold-tier customer C-1042 was not given the 10% loyalty discount."
KEY_ENV = "JUDGE_TEST_KEY"
SECRET = "sk-judge-DO-NOT-LEAK-0987654321"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The coordinator's view: no kernel spool, no KIT_LLM_* (the judge must not read them)."""
    for name in ("KIT_SPOOL", "KIT_LLM_CONFIG", "KIT_LLM_MODE", "KIT_LLM_RECORDINGS", "KIT_STEP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, SECRET)


def config(server, **extra) -> dict:
    fields = {
        "provider": "openai",
        "model": "gpt-judge",
        "base_url": server.base_url,
        "api_key_env": KEY_ENV,
        "params": {"temperature": 0},
        "timeout": 5,
        "max_retries": 1,
        "backoff": 0.01,
    }
    fields.update(extra)
    return fields


def reply(content: str) -> dict:
    return {
        "id": "chatcmpl-judge",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-judge",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
    }


def verdict_reply(verdict: str, reason: str) -> dict:
    return reply(json.dumps({"verdict": verdict, "reason": reason}))


def judge_expectation(rubric: str = RUBRIC, **options) -> Expectation:
    spec = {"judge": rubric, **options}
    return Expectation(key="summarize.summary", step="summarize", output="summary", comparator="judge", spec=spec)


# --------------------------------------------------------------------------- live


def test_live_grading_pass_then_fail_over_real_http(llm_server):
    llm_server.enqueue(200, verdict_reply("pass", "It names the gold tier and the missing discount."))
    llm_server.enqueue(200, verdict_reply("fail", "The tier is not named."))
    judge = Judge(config(llm_server), mode="live")

    verdict, reason, call = judge.grade(RUBRIC, SUMMARY)
    assert (verdict, reason) == ("pass", "It names the gold tier and the missing discount.")
    verdict, reason, _ = judge.grade(RUBRIC, "The customer was unhappy.")
    assert (verdict, reason) == ("fail", "The tier is not named.")

    first = llm_server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = first["body"]
    assert body["model"] == "gpt-judge" and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert '"verdict"' in SYSTEM_PROMPT
    assert json.loads(user["content"]) == {"rubric": RUBRIC, "output": SUMMARY}

    # the call is shaped like a spooled kit.llm call, keyed like one, and holds no secret
    assert call["key"] == request_key(call["request"])
    assert call["request"]["provider"] == "openai" and call["mode"] == "live"
    assert call["replayed"] is False and call["recorded"] is False and call["note"] == ""
    assert call["usage"] == {"input_tokens": 50, "output_tokens": 12, "total_tokens": 62}
    assert SECRET not in json.dumps(call)


def test_model_override_and_structured_outputs(llm_server):
    llm_server.enqueue(200, verdict_reply("PASS", "ok"))
    judge = Judge(json.dumps(config(llm_server)), mode="live")  # the JSON of KIT_LLM_CONFIG works too
    output = {"action": "apply_discount", "confidence": 0.8}
    assert judge.grade("Recommends applying the discount.", output, model="gpt-bigger")[:2] == ("pass", "ok")
    body = llm_server.requests[0]["body"]
    assert body["model"] == "gpt-bigger"
    assert json.loads(body["messages"][1]["content"])["output"] == output


def test_lenient_parsing_finds_the_json_anywhere():
    assert parse_verdict('```json\n{"verdict": "fail", "reason": "no tier"}\n```') == ("fail", "no tier")
    assert parse_verdict('Sure. {"note": 1} Then: {"Verdict": "Passed", "Reason": "fine"} bye') == ("pass", "fine")
    assert parse_verdict('{"verdict": "maybe"}') is None
    assert parse_verdict("I think it passes.") is None
    assert parse_verdict('{"verdict": "pass"') is None


def test_malformed_reply_is_an_error_showing_the_reply(llm_server, tmp_path):
    llm_server.enqueue(200, reply("I think it passes, mostly."))
    llm_server.enqueue(200, reply('{"verdict": "perhaps", "reason": "unsure"}'))
    recordings = tmp_path / "rec.jsonl"
    judge = Judge(config(llm_server), mode="record", recordings=recordings)
    verdict, reason, call = judge.grade(RUBRIC, SUMMARY)
    assert verdict == "error"
    assert "holds no verdict" in reason and "I think it passes, mostly." in reason
    assert call["error"] == reason
    verdict, reason, _ = judge.grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "perhaps" in reason
    assert not recordings.exists()  # a reply without a verdict is not pinned as a recording


def test_failed_call_is_an_error_not_a_crash(llm_server):
    llm_server.enqueue(400, {"error": {"message": "bad model"}})
    verdict, reason, call = Judge(config(llm_server), mode="live").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "the model call failed" in reason and "HTTP 400" in reason
    assert SECRET not in reason


def test_bad_config_or_mode_is_an_error_at_grade_time():
    verdict, reason, _ = Judge({"model": "x"}, mode="live").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "names no provider" in reason
    verdict, reason, _ = Judge({"provider": "openai", "api_key": "sk-x"}, mode="live").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "api_key_env" in reason
    verdict, reason, _ = Judge({"provider": "fake", "model": "fake"}, mode="loud").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "'loud'" in reason
    verdict, reason, _ = Judge.unavailable("the model component notebooks/model.yaml is broken").grade(RUBRIC, SUMMARY)
    assert (verdict, reason) == ("error", "judge: the model component notebooks/model.yaml is broken")


# --------------------------------------------------------------------------- record and replay


def test_record_then_replay_is_deterministic_without_http(llm_server, tmp_path):
    recordings = tmp_path / "recordings" / "missing-discount.jsonl"
    recordings.parent.mkdir()
    # the run's own recordings are already there: the judge's call is appended after them
    recordings.write_text(
        json.dumps(
            {
                "key": "k-step",
                "request": {
                    "provider": "fake",
                    "model": "fake",
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": None,
                    "params": {},
                },
                "response": reply("hi"),
            }
        )
        + "\n"
    )
    llm_server.enqueue(200, verdict_reply("fail", "The discount is not mentioned."))
    recorder = Judge(config(llm_server), mode="record", recordings=recordings)
    verdict, reason, call = recorder.grade(RUBRIC, SUMMARY)
    assert (verdict, reason) == ("fail", "The discount is not mentioned.")
    assert call["recorded"] is True and call["note"] == "recorded"

    lines = [json.loads(line) for line in recordings.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["key"] == "k-step"
    assert lines[1] == {"key": call["key"], "request": call["request"], "response": call["response"]}
    assert call["key"] in load_recordings(recordings)
    assert SECRET not in recordings.read_text()

    # recording the same request again does not duplicate it
    llm_server.enqueue(200, verdict_reply("pass", "changed its mind"))
    _, _, again = recorder.grade(RUBRIC, SUMMARY)
    assert again["recorded"] is False and "already holds" in again["note"]
    assert len(recordings.read_text().splitlines()) == 2

    # replay: the server would now only fail, and is not asked at all
    asked = len(llm_server.requests)
    for _ in range(3):
        llm_server.enqueue(500, {"error": {"message": "down"}})
    replayer = Judge(config(llm_server), mode="replay", recordings=recordings)
    for _ in range(2):
        verdict, reason, replayed = replayer.grade(RUBRIC, SUMMARY)
        assert (verdict, reason) == ("fail", "The discount is not mentioned.")
        assert replayed["replayed"] is True and replayed["note"] == "replayed"
        assert replayed["key"] == call["key"]
    assert len(llm_server.requests) == asked

    # and with the server gone entirely
    llm_server.stop()
    assert replayer.grade(RUBRIC, SUMMARY)[:2] == ("fail", "The discount is not mentioned.")


def test_record_without_a_recordings_file_says_so(llm_server):
    llm_server.enqueue(200, verdict_reply("pass", "ok"))
    verdict, _, call = Judge(config(llm_server), mode="record").grade(RUBRIC, SUMMARY)
    assert verdict == "pass" and call["note"].startswith("not recorded")


def test_replay_miss_is_an_error_saying_how_to_record(llm_server, tmp_path):
    recordings = tmp_path / "rec.jsonl"
    scenario = tmp_path / "missing-discount.yaml"

    # no recordings file at all
    judge = Judge(config(llm_server), mode="replay", recordings=recordings, scenario=scenario)
    verdict, reason, call = judge.grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "replay miss" in reason
    assert f"KIT_LLM_MODE=record kit test {scenario}" in reason and "does not exist" in reason
    assert call["response"] is None and call["key"]

    # no recordings named by the scenario
    verdict, reason, _ = Judge(config(llm_server), mode="replay").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "names no recordings file" in reason and "KIT_LLM_MODE=record kit test" in reason

    # recorded for another output: the miss shows how the request differs
    llm_server.enqueue(200, verdict_reply("pass", "ok"))
    Judge(config(llm_server), mode="record", recordings=recordings).grade(RUBRIC, SUMMARY)
    verdict, reason, _ = judge.grade(RUBRIC, SUMMARY.replace("Gold", "Silver"))
    assert verdict == "error" and "among 1 judge recording" in reason
    assert "-" in reason and "Silver" in reason and "KIT_LLM_MODE=record" in reason
    assert len(llm_server.requests) == 1  # replay never calls out


def test_from_environment_reads_task_environment_variables(llm_server, tmp_path):
    recordings = tmp_path / "rec.jsonl"
    env = {
        "KIT_ENV": "dev",
        "KIT_LLM_CONFIG": json.dumps(config(llm_server), sort_keys=True),
        "KIT_LLM_MODE": "record",
        "KIT_LLM_RECORDINGS": str(recordings),
    }
    llm_server.enqueue(200, verdict_reply("pass", "ok"))
    judge = Judge.from_environment(env, scenario="s.yaml")
    assert judge.mode == "record" and judge.recordings == recordings and judge.config["model"] == "gpt-judge"
    assert judge.grade(RUBRIC, SUMMARY).verdict == "pass"
    assert recordings.exists()
    assert "KIT_LLM_MODE" not in os.environ and "KIT_LLM_CONFIG" not in os.environ  # never set in-process


def test_a_table_output_is_judged_by_its_rows(llm_server):
    pd = pytest.importorskip("pandas")
    llm_server.enqueue(200, verdict_reply("pass", "ok"))
    df = pd.DataFrame({"case": ["C-1", "C-2"], "amount": [10.5, 3]})
    Judge(config(llm_server), mode="live").grade("Two cases.", df)
    sent = json.loads(llm_server.requests[0]["body"]["messages"][1]["content"])["output"]
    assert sent == [{"case": "C-1", "amount": 10.5}, {"case": "C-2", "amount": 3.0}]


# --------------------------------------------------------------------------- the comparator


def test_judge_comparator_is_registered_and_checks_its_spec():
    assert "judge" in C.available()
    name, comp = C.resolve_spec({"judge": RUBRIC, "model": "gpt-4o"})
    assert name == "judge" and comp.options == frozenset({"model"})
    ctx = CompareContext()
    comp.check_spec({"judge": RUBRIC}, ctx)
    for bad in ("", "   ", None, 3, ["a"]):
        with pytest.raises(ValueError, match="judge: expected a rubric"):
            comp.check_spec({"judge": bad}, ctx)
    with pytest.raises(ValueError, match="model: expected a model name"):
        comp.check_spec({"judge": RUBRIC, "model": ""}, ctx)
    with pytest.raises(ValueError, match="does not accept 'abs'"):
        C.resolve_spec({"judge": RUBRIC, "abs": 1})


def test_judge_comparator_through_evaluate(llm_server, tmp_path):
    recordings = tmp_path / "rec.jsonl"
    outputs = {"summarize.summary": SUMMARY}

    llm_server.enqueue(200, verdict_reply("pass", "Tier and discount are named."))
    recorder = Judge(config(llm_server), mode="record", recordings=recordings)
    out = evaluate(judge_expectation(), outputs, CompareContext(base_dir=tmp_path, services={"judge": recorder}))
    assert out.verdict == "pass"
    assert out.detail == "Tier and discount are named. (recorded)"
    assert out.expected == RUBRIC and out.actual == SUMMARY

    llm_server.enqueue(500, {"error": {"message": "down"}})
    replayer = Judge(config(llm_server), mode="replay", recordings=recordings)
    ctx = CompareContext(base_dir=tmp_path, services={"judge": replayer})
    out = evaluate(judge_expectation(), outputs, ctx)
    assert (out.verdict, out.detail) == ("pass", "Tier and discount are named. (replayed)")
    assert len(llm_server.requests) == 1

    # a different output misses in replay: an error, not a pass or a fail
    out = evaluate(judge_expectation(), {"summarize.summary": "Something else."}, ctx)
    assert out.verdict == "error" and "replay miss" in out.detail

    # a fail verdict, live, with the expectation's model
    llm_server._queue.clear()
    llm_server.enqueue(200, verdict_reply("fail", "No tier."))
    live = CompareContext(services={"judge": Judge(config(llm_server), mode="live")})
    out = evaluate(judge_expectation(model="gpt-other"), outputs, live)
    assert (out.verdict, out.detail) == ("fail", "No tier.")
    assert llm_server.requests[-1]["body"]["model"] == "gpt-other"

    # the output missing is a fail before any judging; no judge configured is an error
    out = evaluate(judge_expectation(), {}, live)
    assert out.verdict == "fail" and "was not produced" in out.detail
    out = evaluate(judge_expectation(), outputs, CompareContext())
    assert out.verdict == "error" and "no judge configured" in out.detail
    assert out.expected == RUBRIC


def test_judge_comparator_in_a_scenario_file(tmp_path):
    from kit.errors import InvalidInput
    from kit.verification.scenarios import load_scenario

    good = tmp_path / "s.yaml"
    good.write_text(
        "scenario: casework/judged\nworkflow: casework\n"
        f'expect:\n  summarize.summary: {{judge: "{RUBRIC}", model: gpt-4o}}\n'
    )
    (expectation,) = load_scenario(good).expect
    assert expectation.comparator == "judge" and expectation.spec == {"judge": RUBRIC, "model": "gpt-4o"}

    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: casework/bad\nworkflow: casework\nexpect:\n  summarize.summary: {judge: ''}\n")
    with pytest.raises(InvalidInput, match="judge: expected a rubric"):
        load_scenario(bad)


def test_fake_provider_judge_needs_no_network(tmp_path):
    """The fake provider echoes the user message, which holds no verdict: an error, deterministically."""
    verdict, reason, _ = Judge({"provider": "fake", "model": "fake"}, mode="live").grade(RUBRIC, SUMMARY)
    assert verdict == "error" and "holds no verdict" in reason


def test_a_plugin_provider_judges_in_process(tmp_path):
    from kit import llm
    from kit.kernel import providers

    seen = []

    def grader(request, cfg):
        seen.append(request)
        return verdict_reply("pass", f"graded by {request['model']}")

    llm.register_provider("judge-test", grader)
    try:
        judge = Judge({"provider": "judge-test", "model": "m1"}, mode="record", recordings=tmp_path / "r.jsonl")
        assert judge.grade(RUBRIC, SUMMARY)[:2] == ("pass", "graded by m1")
        replay = Judge({"provider": "judge-test", "model": "m1"}, mode="replay", recordings=tmp_path / "r.jsonl")
        assert replay.grade(RUBRIC, SUMMARY)[:2] == ("pass", "graded by m1")
        assert len(seen) == 1
    finally:
        providers.PROVIDERS.reset()
