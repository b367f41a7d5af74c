"""The LLM captioners, :class:`LLMCaptioner` (from a recipe) and :class:`VisionCaptioner` (from
the photo), and the validation of their answers (:func:`parse_caption`).

Server access (key handling, preflight, retries), the on-disk caption cache and the bounded
concurrency live in :class:`LLMCaptioner`; captions are cut to CLIP's 77 tokens by a
:class:`~dishgen.data.llm.clip_tokens.ClipTokenCounter`. See :mod:`dishgen.data.llm`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from dishgen.data.caption import CaptionInput, CaptionResult
from dishgen.data.llm.answers import parse_json_answer
from dishgen.data.llm.clip_tokens import CLIP_MAX_TOKENS, ClipTokenCounter
from dishgen.data.llm.errors import LLMError
from dishgen.data.records import clean_text
from dishgen.fileio import atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_CACHE_DIR = "~/.cache/dishgen/captions"
PROMPT_VERSION = 1  # part of the cache key: bump it when the prompts change
MAX_CAPTION_CHARS = 1000  # before the cut to CLIP's 77 tokens

TEXT_PROMPT = """\
You write captions for a text-to-image dataset of Serbian and Balkan dishes.
You get one recipe in Serbian or Croatian: its name, ingredients and preparation.
Write one or two English sentences (at most 40 words) describing how the finished dish looks in a \
photograph: its shape, colours, textures, and how it is served or plated. Name the dish by its \
original name with a short English explanation (e.g. "sarma, cabbage rolls ...").
Do not list the ingredients. Do not give quantities, weights, times, temperatures or cooking steps.
Answer with a JSON object and nothing else: {"caption": "<your caption>"}"""

VISION_PROMPT = """\
You write captions for a text-to-image dataset of Serbian and Balkan dishes.
Look at the photograph and write one or two English sentences (at most 40 words) describing the \
dish as it appears: what it is, its shape, colours, textures, and how it is served or plated.
Do not give quantities or recipes.
Answer with a JSON object and nothing else: {"caption": "<your caption>"}"""

_QUANTITY = re.compile(
    r"\b\d+([.,/]\d+)?\s*(g|kg|dag|mg|ml|l|dl|cl|oz|lb|lbs|tbsp|tsp|cups?|grams?|kilograms?|"
    r"lit(er|re)s?|minutes?|mins?|hours?|hrs?|°\s*[cf]?|degrees?|pieces?|pcs|kašik\w*|žlic\w*)\b",
    re.IGNORECASE,
)


class LLMCaptioner:
    """Captions from a recipe's name, ingredients and preparation, written by an LLM.

    Args:
        base_url: the server's OpenAI-compatible API root, e.g. ``http://127.0.0.1:8000/v1``
            (default: ``OPENAI_BASE_URL``, else OpenAI's API).
        model: the model name the server knows (default ``gpt-4o-mini``).
        api_key: the key (default: ``OPENAI_API_KEY``; a server on this machine or a private
            network needs none).
        cache_dir: where captions are cached (default ``~/.cache/dishgen/captions``).
        concurrency: requests in flight at once.
        max_retries: retries of a failed request (connection errors, 429, 5xx; done by the
            openai client with backoff) and, separately, of a malformed answer.
        timeout: seconds per request: per read, and for the whole answer (a server that drips
            its answer byte by byte is cut off too).
        temperature: sampling temperature.
        clip_tokenizer: a CLIP tokenizer folder, or the ``bpe_simple_vocab_16e6.txt.gz`` file,
            used to count tokens (default: ``DISHGEN_CLIP_TOKENIZER``, a cached Hugging Face CLIP
            tokenizer, open_clip's BPE file, else a conservative word-based estimate).
        json_mode: ask the server for ``response_format={"type": "json_object"}`` (turned off
            by itself if the server rejects it).
        preflight: check the server and key now, before any work.

    Raises:
        LLMError: no API key for a remote server, the server cannot be reached, rejects the key,
            or does not serve the model.
    """

    name = "llm"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        cache_dir: str | Path | None = None,
        concurrency: int = 4,
        max_retries: int = 3,
        timeout: float = 60.0,
        temperature: float = 0.3,
        clip_tokenizer: str | Path | None = None,
        json_mode: bool = True,
        preflight: bool = True,
    ):
        import openai

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/") or None
        self.model = model or DEFAULT_MODEL
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        where = self.base_url or "https://api.openai.com/v1"
        if api_key is None:
            if not _is_local(where):
                raise LLMError(
                    f"no API key for the LLM server at {where}: set OPENAI_API_KEY (a server on "
                    "this machine or a private network, such as vLLM, Ollama or llama.cpp, needs "
                    "none: point the base URL at it)"
                )
            api_key = "no-key-needed"  # local servers ignore it; the client wants a value
        self._secret = api_key
        self.where = where
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.temperature = temperature
        self.json_mode = json_mode
        self.timeout = timeout
        from dishgen.data.llm.deadline import deadline_transport

        self._client = openai.OpenAI(  # `timeout` bounds each read, the transport each whole answer
            base_url=self.base_url, api_key=api_key, max_retries=self.max_retries, timeout=timeout,
            http_client=openai.DefaultHttpxClient(transport=deadline_transport(timeout)),
        )
        self.tokens = ClipTokenCounter.load(clip_tokenizer)
        if preflight:
            self.preflight()

    @property
    def description(self) -> str:
        """What to record in ``dataset.json``: captioner, model and server (never the key)."""
        return f"{self.name}:{self.model}@{self.where}"

    # -- the server ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """One cheap request that fails clearly if the server, key or model is wrong.

        ``GET /models`` first; servers without it (404/405/501) get a 1-token chat request.

        Raises:
            LLMError: with what went wrong and what to do.
        """
        import openai

        client = self._client.with_options(max_retries=1, timeout=min(self.timeout, 20.0))
        try:
            try:
                served = [m.id for m in client.models.list()]
            except openai.APIStatusError as err:
                if err.status_code not in (404, 405, 501):
                    raise
                client.chat.completions.create(
                    model=self.model, max_tokens=1,
                    messages=[{"role": "user", "content": "Say OK."}],
                )
                served = []
        except openai.AuthenticationError:
            raise LLMError(
                f"the LLM server at {self.where} rejected the API key (HTTP 401); check "
                "OPENAI_API_KEY"
            ) from None
        except openai.APIConnectionError as err:
            raise LLMError(
                f"cannot reach the LLM server at {self.where} ({self._redact(str(err.__cause__ or err))}); "
                "start it, or point --base-url / OPENAI_BASE_URL at a running OpenAI-compatible server"
            ) from None
        except openai.NotFoundError:
            raise LLMError(
                f"the LLM server at {self.where} does not serve model {self.model!r} (HTTP 404); "
                "pass --model with a model it serves"
            ) from None
        except openai.APIStatusError as err:
            raise LLMError(
                f"the LLM server at {self.where} answered HTTP {err.status_code} to a test "
                f"request: {self._redact(err.message)[:300]}"
            ) from None
        except (AttributeError, TypeError, ValueError) as err:  # a web page, or JSON of another shape
            raise LLMError(
                f"the server at {self.where} does not answer like an OpenAI-compatible API "
                f"({type(err).__name__}: {str(err)[:120]}); point --base-url at the API root "
                "(e.g. http://127.0.0.1:8000/v1), not at a web page or a proxy's login page"
            ) from None
        if served and self.model not in served:
            log.warning(
                "model %r is not among the models %s lists (%s); trying it anyway",
                self.model, self.where, ", ".join(served[:10]),
            )

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    # -- captions -----------------------------------------------------------------------------

    def caption_many(self, items: list[CaptionInput]) -> list[CaptionResult]:
        """Caption each item (cached ones from disk, the rest through the server).

        Returns:
            One result per item, in order; a failed item has ``text=None`` and its ``error``.
        """
        from tqdm import tqdm

        results: list[CaptionResult | None] = [None] * len(items)
        keys = [self._cache_key(item) for item in items]
        todo: dict[str, list[int]] = {}  # one request per distinct input, e.g. a dish's photos
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            cached = self._cache_read(key) if key else None
            if cached is not None:
                results[index] = CaptionResult(cached)
            elif key is None:
                results[index] = CaptionResult(None, self._no_input_reason(item))
            else:
                todo.setdefault(key, []).append(index)

        def work(key: str) -> tuple[str, CaptionResult]:
            item = items[todo[key][0]]
            try:
                result = self._ask(item)
            except MemoryError:
                raise
            except Exception as err:  # noqa: BLE001 (one item's failure is recorded, never the job's)
                log.warning("captioning %r failed unexpectedly", item.name, exc_info=True)
                result = CaptionResult(None, self._redact(f"unexpected {type(err).__name__}: {err}")[:300])
            if result.text is not None:
                self._cache_write(key, result.text, item)
            return key, result

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool, tqdm(
            total=len(todo), desc=f"caption ({self.model})", unit="caption", disable=None,
            leave=False,
        ) as bar:
            for key, result in pool.map(work, list(todo)):
                for index in todo[key]:
                    results[index] = result
                bar.update(1)
        return [self._fit_clip(result, item) for result, item in zip(results, items, strict=True)]

    def _fit_clip(self, result: CaptionResult, item: CaptionInput) -> CaptionResult:
        if result.text is None:
            return result
        text, count = self.tokens.truncate(result.text)
        if text != result.text:
            log.warning(
                "caption of %r was %d CLIP tokens (%s); cut to %d: %r",
                item.name or item.image_path, count, self.tokens.method, CLIP_MAX_TOKENS, text,
            )
        return CaptionResult(text)

    def _ask(self, item: CaptionInput) -> CaptionResult:
        """One item: request, validate, re-ask on a malformed answer, record the failure."""
        import openai

        messages = self._messages(item)
        problem = ""
        for _attempt in range(self.max_retries + 1):
            try:
                content = self._complete(messages)
            except LLMError as err:  # not a chat completion at all: asking again will not help
                return CaptionResult(None, self._redact(str(err)))
            except openai.APIError as err:
                status = getattr(err, "status_code", None)
                what = f"HTTP {status}" if status else type(err).__name__
                detail = self._redact(getattr(err, "message", "") or str(err))[:200]
                return CaptionResult(None, f"LLM request failed ({what}): {detail}")
            caption, problem = parse_caption(content)
            if caption is not None:
                return CaptionResult(caption)
            log.info("malformed answer for %r (%s); asking again", item.name, problem)
            messages = self._messages(item) + [
                {"role": "assistant", "content": (content or "")[:2000]},
                {"role": "user", "content": f"That answer is not usable: {problem}. Answer "
                 'again with only a JSON object: {"caption": "<one or two sentences>"}'},
            ]
        return CaptionResult(
            None, f"malformed LLM answer after {self.max_retries + 1} attempts: {problem}"
        )

    def _complete(self, messages: list[dict]) -> str:
        import openai

        options = {"response_format": {"type": "json_object"}} if self.json_mode else {}
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature,
                max_tokens=200, **options,
            )
        except openai.BadRequestError as err:
            if not (self.json_mode and "response_format" in str(err.message)):
                raise
            log.warning("%s does not take response_format=json_object; relying on the prompt",
                        self.where)
            self.json_mode = False
            return self._complete(messages)
        except ValueError as err:  # a body declared as JSON that is not (json.JSONDecodeError)
            raise LLMError(f"the LLM server answered a body that is not valid JSON ({err})") from None
        return response_content(response)

    def _messages(self, item: CaptionInput) -> list[dict]:
        recipe = [f"Name: {item.name}"]
        if item.ingredients:
            recipe.append("Ingredients:\n" + "\n".join(f"- {line}" for line in item.ingredients[:40]))
        if item.preparation:
            recipe.append("Preparation:\n" + "\n".join(item.preparation)[:3000])
        return [
            {"role": "system", "content": TEXT_PROMPT},
            {"role": "user", "content": "\n\n".join(recipe)},
        ]

    def _no_input_reason(self, item: CaptionInput) -> str:
        return "no dish name to caption from"

    # -- cache --------------------------------------------------------------------------------

    def _cache_key(self, item: CaptionInput) -> str | None:
        """A hash of everything the caption depends on, or None when there is nothing to ask."""
        if not item.name.strip():
            return None
        payload = {"v": PROMPT_VERSION, "kind": self.name, "model": self.model,
                   "name": item.name, "ingredients": item.ingredients,
                   "preparation": item.preparation, "temperature": self.temperature}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_read(self, key: str) -> str | None:
        path = self._cache_path(key)
        try:
            caption = json.loads(path.read_text(encoding="utf-8")).get("caption")
        except (OSError, json.JSONDecodeError, AttributeError):
            return None
        return caption if isinstance(caption, str) and caption.strip() else None

    def _cache_write(self, key: str, caption: str, item: CaptionInput) -> None:
        atomic_write_json(self._cache_path(key), {
            "caption": caption, "model": self.model, "name": item.name,
            "kind": self.name, "prompt_version": PROMPT_VERSION,
        })


class VisionCaptioner(LLMCaptioner):
    """Captions from the photo itself, for datasets that have no recipe text.

    The photo is sent as a base64 JPEG data URL (longer side at most ``max_image_side``); the dish
    name, when known, is given as a hint. Takes the options of :class:`LLMCaptioner`, plus
    ``max_image_side`` (default 512); the model must accept images (e.g. gpt-4o-mini, Qwen2-VL,
    llava).
    """

    name = "llm-vision"

    def __init__(self, *, max_image_side: int = 512, **options):
        self.max_image_side = max_image_side
        super().__init__(**options)

    def _messages(self, item: CaptionInput) -> list[dict]:
        hint = f"The dish is probably: {item.name}." if item.name.strip() else "Describe the dish."
        return [
            {"role": "system", "content": VISION_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": hint},
                {"type": "image_url", "image_url": {"url": self._data_url(item.image_path)}},
            ]},
        ]

    def _data_url(self, path: Path) -> str:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((self.max_image_side, self.max_image_side))
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=90)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def _no_input_reason(self, item: CaptionInput) -> str:
        if item.image_path is None:
            return "no photo to caption from"
        return f"photo {str(item.image_path)!r} does not exist"

    def _cache_key(self, item: CaptionInput) -> str | None:
        if item.image_path is None or not Path(item.image_path).is_file():
            return None
        digest = hashlib.sha256(Path(item.image_path).read_bytes()).hexdigest()
        payload = {"v": PROMPT_VERSION, "kind": self.name, "model": self.model, "image": digest,
                   "name": item.name, "side": self.max_image_side, "temperature": self.temperature}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def response_content(response) -> str:
    """The message text of a chat completion, whatever the server sent.

    A proxy or a misconfigured URL may answer HTTP 200 with an HTML page, which the openai
    client returns as a ``str``; other servers send JSON of another shape. Those are not
    answers of the model, so they are errors of the one request, not of the whole job.

    Returns:
        The first choice's message content ("" when it is null).

    Raises:
        LLMError: the response is not a chat completion (HTML, wrong shape, no choices).
    """
    if isinstance(response, (str, bytes)):
        text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
        kind = "an HTML page" if "<html" in text[:500].lower() or "<!doctype" in text[:500].lower() else "text"
        raise LLMError(f"the LLM server answered {kind}, not a chat completion "
                       f"({clean_text(text, 80)!r}); is a proxy or a wrong --base-url in the way?")
    try:
        choices = response.choices
        if not isinstance(choices, list) or not choices:
            raise LLMError(f"the LLM server answered a chat completion without choices ({choices!r:.80})")
        message = choices[0].message
        content = message.content if message is not None else None
    except (AttributeError, TypeError, KeyError, IndexError) as err:
        raise LLMError(f"the LLM server answered JSON that is not a chat completion ({type(err).__name__}: "
                       f"{clean_text(err, 120)})") from None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise LLMError(f"the LLM server answered a message whose content is not text ({content!r:.80})")
    return content


def parse_caption(content: str | None) -> tuple[str | None, str]:
    """Validate an LLM answer: JSON with a one- or two-sentence ``caption`` and no quantities.

    Returns:
        ``(caption, "")`` when usable, else ``(None, reason)``.
    """
    data, problem = parse_json_answer(content)
    if problem:
        return None, problem
    caption = data.get("caption") if isinstance(data, dict) else None
    if not isinstance(caption, str) or not caption.strip():
        return None, "JSON without a non-empty 'caption' string"
    caption = clean_text(caption, MAX_CAPTION_CHARS)  # no NUL, ANSI escapes or stray whitespace
    if len(caption) < 12:
        return None, f"caption too short ({caption!r})"
    quantity = _QUANTITY.search(caption)
    if quantity:
        return None, f"caption gives a quantity ({quantity.group(0)!r})"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", caption) if s.strip()]
    if len(sentences) > 2:
        return None, f"caption has {len(sentences)} sentences, not one or two"
    if caption.count(",") > 7:
        return None, "caption reads like an ingredient list"
    return caption, ""


def _is_local(url: str) -> bool:
    """Whether ``url`` points at this machine or a private network (no key needed there)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local
