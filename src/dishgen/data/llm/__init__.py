"""Captions written by an LLM through any OpenAI-compatible server (OpenAI, vLLM, Ollama,
llama.cpp, LM Studio, ...).

::

    from dishgen.data.caption import CaptionInput, get_captioner
    captioner = get_captioner("llm", base_url="http://127.0.0.1:8000/v1", model="qwen2.5-7b")
    results = captioner.caption_many([CaptionInput("Sarma", ingredients=[...], preparation=[...])])

``LLMCaptioner`` turns a Serbian or Croatian recipe (name, ingredients, preparation) into one or two
English sentences about how the dish looks; ``VisionCaptioner`` describes the photo itself, for
image-only datasets. Both check the server once when they are built (so a missing key or a server
that is down fails before any work starts), ask for JSON, validate the answer (a malformed one is
asked again, then recorded as an error, never written as a caption), cache captions on disk by a
hash of everything that went into them, run a bounded number of requests at once, and cut
captions to the 77 tokens a CLIP text encoder reads.
"""


from dishgen.data.llm.captioners import (
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL,
    PROMPT_VERSION,
    TEXT_PROMPT,
    VISION_PROMPT,
    LLMCaptioner,
    VisionCaptioner,
    parse_caption,
)
from dishgen.data.llm.clip_tokens import CLIP_MAX_TOKENS, ClipTokenCounter, estimate_clip_tokens
from dishgen.data.llm.errors import LLMError

__all__ = [
    "CLIP_MAX_TOKENS", "DEFAULT_CACHE_DIR", "DEFAULT_MODEL", "PROMPT_VERSION", "TEXT_PROMPT",
    "VISION_PROMPT", "ClipTokenCounter", "LLMCaptioner", "LLMError", "VisionCaptioner",
    "estimate_clip_tokens", "parse_caption",
]
