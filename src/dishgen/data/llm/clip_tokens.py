"""CLIP token counting for captions with a real CLIP BPE tokenizer (the packaged copy of CLIP's
BPE merges by default; nothing is downloaded), and cutting a caption to 77 tokens. A conservative
word-based estimate remains for a tokenizer that cannot be loaded.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
from pathlib import Path

from dishgen.data.llm.errors import LLMError

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77  # including the start and end tokens
# CLIP's BPE merges as released with CLIP (a copy from open-clip, MIT licence, beside it).
PACKAGED_BPE = Path(__file__).parent / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"


class ClipTokenCounter:
    """Counts CLIP tokens with a real CLIP tokenizer when one is on this machine, else estimates.

    Attributes:
        method: which one is used, for messages (``"CLIP BPE tokenizer (<where>)"`` or
            ``"word-based estimate"``).
    """

    def __init__(self, tokenizer=None, method: str = "word-based estimate"):
        self.tokenizer = tokenizer
        self.method = method

    @classmethod
    def load(cls, source: str | Path | None = None) -> ClipTokenCounter:
        """Find a CLIP tokenizer: ``source``, ``DISHGEN_CLIP_TOKENIZER``, the Hugging Face cache,
        open_clip's BPE file, the packaged BPE file; else fall back to the estimate (logged)."""
        source = source or os.environ.get("DISHGEN_CLIP_TOKENIZER")
        if source:
            return cls(_load_clip_tokenizer(Path(source).expanduser()),
                       f"CLIP BPE tokenizer ({source})")
        for folder, where in _cached_clip_tokenizers():
            try:
                return cls(_load_clip_tokenizer(folder), f"CLIP BPE tokenizer ({where})")
            except (LLMError, ImportError, OSError, ValueError) as err:
                log.debug("CLIP tokenizer in %s not usable: %s", folder, err)
        log.info("no CLIP tokenizer found on this machine; caption lengths use a conservative "
                 "word-based estimate (set DISHGEN_CLIP_TOKENIZER to a tokenizer to count exactly)")
        return cls()

    def count(self, text: str) -> int:
        """Tokens of ``text`` including the start and end tokens."""
        if self.tokenizer is not None:
            return len(_token_ids(self.tokenizer, text))
        return 2 + estimate_clip_tokens(text)

    def truncate(self, text: str, max_tokens: int = CLIP_MAX_TOKENS) -> tuple[str, int]:
        """``text`` cut at a word boundary to at most ``max_tokens``; also its original count."""
        total = self.count(text)
        if total <= max_tokens:
            return text, total
        words = text.split()
        low, high = 0, len(words)  # the longest prefix of words that fits
        while low < high:
            middle = (low + high + 1) // 2
            if self.count(" ".join(words[:middle])) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        cut = " ".join(words[:low]).rstrip(",;:-–")
        return cut, total


def estimate_clip_tokens(text: str) -> int:
    """An over-estimate of CLIP's BPE tokens (without start/end) when no tokenizer is at hand.

    One token per punctuation mark and digit, one per 2.5 letters of a word (at least one) and
    two more per non-ASCII letter. Checked against the real tokenizer: it never counted too few on
    English captions with Serbian dish names or on Serbian recipe text, and counts English about
    1.7 times too many, so captions are cut earlier than they need be (exact counting: install a
    CLIP tokenizer, see :meth:`ClipTokenCounter.load`).
    """
    count = 0
    for piece in re.findall(r"[^\W\d_]+|\d|[^\s\w]", text.lower()):
        if piece[0].isalpha():
            count += max(1, math.ceil(len(piece) / 2.5)) + 2 * sum(ord(c) > 127 for c in piece)
        else:
            count += 1
    return count


def _cached_clip_tokenizers():
    """(folder, description) of CLIP tokenizers already on this machine; nothing is downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        try_to_load_from_cache = None
    if try_to_load_from_cache is not None:
        for repo, subfolder in (("openai/clip-vit-large-patch14", ""),
                                ("openai/clip-vit-base-patch32", ""),
                                ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer/"),
                                ("runwayml/stable-diffusion-v1-5", "tokenizer/")):
            files = [try_to_load_from_cache(repo, subfolder + name)
                     for name in ("vocab.json", "merges.txt")]
            if all(isinstance(f, str) for f in files):
                yield Path(files[0]).parent, f"{repo}, from the Hugging Face cache"
    bpe = _open_clip_bpe()
    if bpe is not None:
        yield bpe, str(bpe)
    yield PACKAGED_BPE, "CLIP's BPE merges shipped with dishgen"


def _load_clip_tokenizer(source: Path):
    """A transformers CLIPTokenizer from a tokenizer folder or OpenAI's BPE merges file.

    Raises:
        LLMError: the path does not exist or does not hold CLIP's 49,408-token vocabulary
            (transformers builds a useless 2-token tokenizer from a folder without its files).
    """
    if source.is_dir():
        from transformers import CLIPTokenizer

        try:
            tokenizer = CLIPTokenizer.from_pretrained(source, model_max_length=77)
        except (OSError, ValueError) as err:
            raise LLMError(f"cannot load a CLIP tokenizer from {str(source)!r}: {err}") from None
        return _checked(tokenizer, source)
    if not source.is_file():
        raise LLMError(f"CLIP tokenizer {str(source)!r} does not exist; pass a tokenizer folder "
                       "or the bpe_simple_vocab_16e6.txt.gz file")
    return _checked(_tokenizer_from_bpe(source), source)


def _token_ids(tokenizer, text: str) -> list[int]:
    """Token ids with start and end, from a transformers or a ``tokenizers`` tokenizer."""
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        return tokenizer.encode(text).ids
    return tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]


def _checked(tokenizer, source: Path):
    ids = _token_ids(tokenizer, "a photo of a cat")
    if ids != [49406, 320, 1125, 539, 320, 2368, 49407]:
        raise LLMError(f"{str(source)!r} is not a CLIP tokenizer (it read 'a photo of a cat' as "
                       f"{ids[:8]}); pass a CLIP tokenizer folder or bpe_simple_vocab_16e6.txt.gz")
    return tokenizer


def _tokenizer_from_bpe(source: Path):
    """CLIP's tokenizer built with ``tokenizers`` from OpenAI's BPE merges file.

    The same pipeline as CLIP's reference code (and transformers' CLIPTokenizerFast): NFC,
    whitespace runs to one space, lower case; split into contractions, letter runs, single digits
    and punctuation runs; byte-level characters; BPE with ``</w>`` closing each word.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    try:
        # A header line, then the 48,894 merges CLIP uses (49,408-token vocabulary).
        merges = gzip.open(source).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise LLMError(f"cannot read CLIP BPE merges from {str(source)!r}: {err}") from None
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    try:
        model = models.BPE({token: i for i, token in enumerate(vocab)}, [tuple(m.split()) for m in merges],
                           end_of_word_suffix="</w>", unk_token="<|endoftext|>")
    except Exception as err:  # tokenizers raises its own exception type for bad merges
        raise LLMError(f"{str(source)!r} does not hold CLIP's BPE merges: {err}") from None
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    words = Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(words, behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", len(vocab) - 2), ("<|endoftext|>", len(vocab) - 1)])
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _open_clip_bpe() -> Path | None:
    """open_clip's copy of the BPE file, found without importing open_clip (needs torchvision)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None
