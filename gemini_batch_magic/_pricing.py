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

Media parts count as input tokens at the documented rates of :data:`MEDIA_TOKENS` (see
:func:`media_tokens`); an embedding run has no output tokens.
"""

from __future__ import annotations

__all__ = ["ASSUMED_OUTPUT_TOKENS", "BATCH_PRICES", "MEDIA_TOKENS", "MEDIA_TOKENS_DATE",
           "media_tokens", "price_for"]

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


#: When :data:`MEDIA_TOKENS` was read from Google's token-counting documentation.
MEDIA_TOKENS_DATE = "2025-06-01"
#: Documented input tokens of media (Gemini 2.x and later):
#: ``image``: an image with both sides at most 384 px; larger ones are cut into 768x768
#: tiles of this many tokens each; ``page``: a PDF page; ``audio_second`` /
#: ``video_second``: a second of audio / of video (frames and sound). ``assumed_*`` are our
#: assumptions where a file's length cannot be read from its header: an audio or video
#: file's seconds from its size at that many bytes a second, a PDF whose pages cannot be
#: counted as one page per ``assumed_page_bytes``, and a URL or ``files/`` name (not read
#: at all) as ``assumed_unknown`` tokens.
MEDIA_TOKENS: dict[str, float] = {
    "image": 258,
    "page": 258,
    "audio_second": 32,
    "video_second": 263,
    "assumed_audio_bytes_per_second": 16_000,  # 128 kbit/s
    "assumed_video_bytes_per_second": 250_000,  # 2 Mbit/s
    "assumed_page_bytes": 100_000,
    "assumed_unknown": 258,
}


def media_tokens(mime: str | None, size: int | None, *, width: int | None = None,
                 height: int | None = None, pages: int | None = None,
                 seconds: float | None = None) -> int:
    """Estimated input tokens of one media part (see :data:`MEDIA_TOKENS`)."""
    rate = MEDIA_TOKENS
    kind = (mime or "").split("/", 1)[0]
    if mime is None or size is None:
        return int(rate["assumed_unknown"])
    if kind == "image":
        if width and height and (width > 384 or height > 384):
            tiles = -(-width // 768) * -(-height // 768)
            return int(rate["image"] * tiles)
        return int(rate["image"])
    if mime == "application/pdf":
        n = pages or max(1, -(-size // int(rate["assumed_page_bytes"])))
        return int(rate["page"] * n)
    if kind == "audio":
        secs = seconds if seconds is not None else size / rate["assumed_audio_bytes_per_second"]
        return max(1, round(rate["audio_second"] * secs))
    if kind == "video":
        secs = seconds if seconds is not None else size / rate["assumed_video_bytes_per_second"]
        return max(1, round(rate["video_second"] * secs))
    return max(1, -(-size // 4))  # text documents: ~4 bytes a token, like prompts
