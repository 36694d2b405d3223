"""Batch prices and the cost estimate.

Prices are USD per 1,000,000 tokens **at Batch Mode rates** (50% of the interactive price),
taken from Google's public pricing page for prompts up to 200k tokens. They change: check
them before relying on an estimate, and override them with :data:`BATCH_PRICES` if needed.

How a run is estimated (nothing is sent):

* input tokens: ``ceil(utf8_bytes / 4)`` of each request's prompt plus its system
  instruction (Gemini averages about 4 bytes of English text per token);
* output tokens: ``max_output_tokens`` from the generation config if set, else
  :data:`ASSUMED_OUTPUT_TOKENS` per request (an assumption; actual output may differ);
* cost: ``input_tokens * input_price + output_tokens * output_price``, per 1M tokens.
"""

from __future__ import annotations

__all__ = ["ASSUMED_OUTPUT_TOKENS", "BATCH_PRICES", "price_for"]

#: Output tokens assumed per request when no ``max_output_tokens`` is set.
ASSUMED_OUTPUT_TOKENS = 256

#: model id -> (input USD, output USD) per 1M tokens, Batch Mode.
BATCH_PRICES: dict[str, tuple[float, float]] = {
    "gemini-3-pro-preview": (1.00, 6.00),
    "gemini-2.5-pro": (0.625, 5.00),
    "gemini-2.5-flash": (0.15, 1.25),
    "gemini-2.5-flash-lite": (0.05, 0.20),
    "gemini-2.0-flash": (0.05, 0.20),
    "gemini-2.0-flash-lite": (0.0375, 0.15),
    "gemini-embedding-001": (0.075, 0.0),
}


def price_for(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model`` at batch rates, or None if unknown."""
    name = model.split("/", 1)[1] if model.startswith("models/") else model
    if name in BATCH_PRICES:
        return BATCH_PRICES[name]
    # versioned ids such as gemini-2.5-flash-001 or -preview-09-2025 fall back to their family
    for known in sorted(BATCH_PRICES, key=len, reverse=True):
        if name.startswith(known + "-"):
            return BATCH_PRICES[known]
    return None
