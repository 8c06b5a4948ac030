"""What the LLM costs: a price table by model, and the price of a step's tokens.

The table is a YAML file the operator edits (``telemetry/prices.yaml`` by default, or the file named by
``LLM_PRICES_FILE``): for each model, as ``gen_ai.request.model`` names it (on Azure OpenAI the *deployment*
name), US dollars per million tokens of input, of cached input and of output::

    currency: USD
    models:
      gpt-5.2-chat: {input: 1.75, cached_input: 0.175, output: 14.0}

Cached input tokens are part of the input tokens (OpenAI ``usage.prompt_tokens_details.cached_tokens``,
LangChain ``usage_metadata.input_token_details.cache_read``) and are billed at the cached price instead of the
input price. A model the table does not name has no price: its spend is not measured (``None``), never
guessed, and the service logs it once at start-up.

Spend is reported three ways (docs/telemetry.md, "Cost"): the counter ``quiz.llm.cost.usd`` by model, agent
and step; ``quiz.cost.usd`` on the round's span; ``usage.cost_usd`` in the round's JSON and SSE result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
PER_TOKENS = 1_000_000  # prices are per million tokens


class Price(BaseModel):
    """One model's price, US dollars per million tokens (``PER_TOKENS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="Per million input tokens not read from the provider's cache.")
    cached_input: float = Field(ge=0, description="Per million input tokens read from the provider's prompt cache.")
    output: float = Field(ge=0, description="Per million output tokens (reasoning tokens included).")

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """US dollars for one call's (or a sum of calls') tokens; ``cached_input_tokens`` are among
        ``input_tokens`` (never more than them)."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        return ((input_tokens - cached) * self.input + cached * self.cached_input
                + output_tokens * self.output) / PER_TOKENS


class PriceTable(BaseModel):
    """The price table file: its ``currency`` (US dollars only: the metric's unit says so) and ``models``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Literal["USD"] = "USD"
    models: dict[str, Price] = Field(default_factory=dict)

    def price(self, model: str) -> Price | None:
        """``model``'s price, or ``None`` when the table does not name it."""
        return self.models.get(model)


def load_prices(path: Path | None = None) -> PriceTable:
    """The price table in ``path`` (default ``DEFAULT_PRICES``).

    Raises ``ValueError`` naming the file and what is wrong when it cannot be read, is not YAML, or does not
    have the table's shape (a negative price, a missing ``output`` …): a service with a broken table does not
    start, rather than report a wrong spend.
    """
    path = path or DEFAULT_PRICES
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PriceTable.model_validate(document or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"price table {path}: {exc}") from exc


def total(costs: list[float | None]) -> float | None:
    """The sum of ``costs``; ``None`` when any is unknown (a model without a price), so that a partial sum is
    never reported as a round's cost."""
    if any(cost is None for cost in costs):
        return None
    return sum(cost for cost in costs if cost is not None)
