"""The step environment: the variables every kernel of a run sees, from its environment's
config, the model component and the LLM mode (DESIGN sections 5 and 10).

``KIT_ENV`` and ``KIT_ENV_CONFIG`` (the environment's config file, as JSON),
``KIT_LLM_CONFIG`` (the model component with the environment's ``model:`` overrides),
``KIT_LLM_MODE`` and, in replay, ``KIT_LLM_RECORDINGS`` and its digest. They are part
of every step's cache key: a changed config or recording means a step runs again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.errors import InvalidInput
from kit.spec.manifest import Workflow


@dataclass
class LLMSettings:
    """How a run's `kit.llm` calls behave: `live`, `record` or `replay` (from `recordings`)."""

    mode: str | None = None
    recordings: Path | None = None


def environment_config(workflow: Workflow, env: str | None) -> dict[str, Any]:
    """The environment's config file (`environments.ENV.config`), as a mapping."""
    if env is None or env not in workflow.spec.environments or not workflow.spec.environments[env].config:
        return {}
    from kit.base.yamlio import load_mapping

    return load_mapping(workflow.dir / workflow.spec.environments[env].config)[0]


def model_config(workflow: Workflow, env: str | None) -> dict[str, Any]:
    """The model component with the environment's overrides under `model:` (the default model without one)."""
    from kit.kernel import calls as llm

    config = environment_config(workflow, env)
    overrides = config.get("model") if isinstance(config.get("model"), dict) else None
    component = workflow.spec.components.get("model")
    if component is None:
        return {**llm.DEFAULT_CONFIG, **(overrides or {})}
    try:
        return llm.config_from_component(workflow.dir / component.path, overrides)
    except llm.LLMError as exc:
        raise InvalidInput(f"{workflow.path}: components.model: {exc}") from None


def task_environment(workflow: Workflow, env: str | None, llm: LLMSettings | None) -> dict[str, str]:
    """Environment variables for the run's kernels: the environment, and the model and LLM mode."""
    out = {
        "KIT_ENV": env or "",
        "KIT_ENV_CONFIG": json.dumps(environment_config(workflow, env), default=str),
        "KIT_LLM_CONFIG": json.dumps(model_config(workflow, env), sort_keys=True, default=str),
    }
    out["KIT_LLM_MODE"] = (llm.mode if llm else None) or os.environ.get("KIT_LLM_MODE") or "live"
    if llm and llm.recordings:
        out["KIT_LLM_RECORDINGS"] = str(llm.recordings)
        if Path(llm.recordings).is_file():  # recordings decide replayed outputs: they belong in cache keys
            from kit.base.digests import sha256_file

            out["KIT_LLM_RECORDINGS_SHA256"] = sha256_file(llm.recordings)
    return out
