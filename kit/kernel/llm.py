"""``kit.llm``: what a step notebook calls a model with. The calls are made in `kit.kernel.calls`
(configuration, modes, recordings, spans: read its docstring); the bounded tool-calling loop is
`kit.kernel.agent`. This module only gathers their public names, so neither imports the other's face.
"""

from kit.kernel.agent import (
    AgentError,
    AgentResult,
    ToolCall,
    ToolError,
    ToolReplayMismatch,
    ToolTimeout,
    agent,
)
from kit.kernel.calls import (
    CALLS_FILE,
    LLMError,
    ReplayMiss,
    chat,
    check_model_config,
    complete,
    config_from_component,
    load_config,
    register_provider,
    response_text,
    usage_of,
)

__all__ = [
    "AgentError",
    "AgentResult",
    "CALLS_FILE",
    "LLMError",
    "ReplayMiss",
    "ToolCall",
    "ToolError",
    "ToolReplayMismatch",
    "ToolTimeout",
    "agent",
    "chat",
    "check_model_config",
    "complete",
    "config_from_component",
    "load_config",
    "register_provider",
    "response_text",
    "usage_of",
]
