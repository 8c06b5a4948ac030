"""Structured output: one forced function call per agent step, validated, retried, token-counted.

Forced function calling works on Azure OpenAI, OpenAI, vLLM, Ollama and llama.cpp's server
(../shared/LOCAL-MODEL-NOTES.md: its tool calls are grammar-constrained).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import Runnable
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from pydantic import BaseModel, ValidationError

from graphs.state import TokenUsage
from telemetry import contract as C

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class StructuredOutputError(Exception):
    """The model's output did not validate against the step's schema after every allowed attempt.
    ``usage``: the tokens those attempts spent (the provider bills them though nothing came of them)."""

    def __init__(self, step: str, attempts: int, usage: TokenUsage | None = None) -> None:
        super().__init__(f"{step}: no valid structured output after {attempts} attempt(s)")
        self.step = step
        self.attempts = attempts
        self.usage = usage


@dataclass(frozen=True)
class StructuredCall(Generic[SchemaT]):
    """A chat model bound once to one forced function call, and the parser for its arguments.

    This is LangChain's ``with_structured_output(schema, method="function_calling")`` taken apart:
    the same ``bind_tools(..., tool_choice=<schema>, parallel_tool_calls=False)`` and the same
    ``PydanticToolsParser``, but built once at start-up and parsed directly, without the per-call runnable
    chain (whose ``inspect.signature`` calls cost ~14 % of the service's CPU per round, see bench/README.md).
    """

    step: str  # an agent step, or another task's name (the prompt optimiser's ``rewrite``)
    schema: type[SchemaT]
    runnable: Runnable[Any, BaseMessage]
    parser: PydanticToolsParser

    @classmethod
    def bind(cls, step: str, model: BaseChatModel, schema: type[SchemaT]) -> StructuredCall[SchemaT]:
        """Bind ``model`` to call ``schema`` as its one tool. Converts the schema to JSON Schema once."""
        runnable = model.bind_tools([schema], tool_choice=schema.__name__, parallel_tool_calls=False)
        return cls(step, schema, runnable, PydanticToolsParser(tools=[schema], first_tool_only=True))

    async def __call__(self, messages: list[BaseMessage]) -> tuple[SchemaT | None, BaseMessage]:
        """One call: ``(parsed, or None when the arguments do not validate; the raw message)``.

        Provider errors (``openai.APIError`` and its subclasses) propagate unchanged.
        """
        message = await self.runnable.ainvoke(messages)
        try:
            parsed = self.parser.parse_result([ChatGeneration(message=message)])
        except (OutputParserException, ValidationError):
            parsed = None
        return parsed, message


async def call_structured(call: StructuredCall[SchemaT], messages: list[BaseMessage], *, attempts: int,
                          deadline_s: float | None,
                          acceptable: Callable[[SchemaT], bool] = lambda _: True) -> tuple[SchemaT, TokenUsage]:
    """Call the model for a ``call.schema`` instance, asking again (up to ``attempts`` calls in all) while
    the output does not validate or is not ``acceptable``.

    Each call may take at most ``deadline_s`` seconds, the client's retries included (``None``: no bound):
    the client's timeout bounds each read, not the call, so a response that trickles in byte by byte would
    otherwise never end. Records the tokens of all attempts as ``gen_ai.usage.*`` on the current span, and
    one ``structured_output.invalid`` span event per rejected output.

    Returns the parsed object and the tokens of all attempts (their ``cost_usd`` left ``None``: the caller
    knows the price). Raises ``StructuredOutputError`` when no attempt is usable, ``TimeoutError`` past the
    deadline; provider errors propagate unchanged.
    """
    span = trace.get_current_span()
    usage = TokenUsage(input_tokens=0, output_tokens=0, cached_input_tokens=0, cost_usd=None)
    for attempt in range(1, attempts + 1):
        async with asyncio.timeout(deadline_s):
            parsed, message = await call(messages)
        meta = message.usage_metadata if isinstance(message, AIMessage) else None
        if meta:
            usage["input_tokens"] += meta["input_tokens"]
            usage["output_tokens"] += meta["output_tokens"]
            usage["cached_input_tokens"] += (meta.get("input_token_details") or {}).get("cache_read", 0)
        if parsed is not None and acceptable(parsed):
            span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, usage["input_tokens"])
            span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, usage["output_tokens"])
            return parsed, usage
        span.add_event(C.EVENT_INVALID_OUTPUT, {C.EVENT_ATTR_ATTEMPT: attempt,
                                                C.EVENT_ATTR_SCHEMA: call.schema.__name__})
    span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, usage["input_tokens"])
    span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, usage["output_tokens"])
    raise StructuredOutputError(call.step, attempts, usage)
