"""Feature networks for the metrics: Inception (torch-fidelity), CLIP's image tower, DINOv2.

Every feature network is an ``nn.Module`` that takes a batch of ``uint8`` images ``(B, 3, H, W)``
in [0, 255] (the torchmetrics convention) and returns ``(B, D)`` float features; it does its own
resizing and normalisation, so the same module can be handed to torchmetrics directly.

The real backbones load from a Hugging Face hub id or a local folder (``save_pretrained`` /
``hf download --local-dir``); a hub id is looked up in the local cache first and, when it is not
there and the hub cannot be reached, fails within about 1.5 s (:mod:`dishgen.hub`) with a message
saying how to get it, before any image is generated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from dishgen.errors import DishgenError
from dishgen.hub import resolve_hub_model

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_DINOV2_MODEL = "facebook/dinov2-base"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth"
)
BACKBONES = ("inception", "clip", "dinov2")

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneUnavailable(DishgenError):
    """A feature or CLIP network that is not installed, not downloadable or not a valid folder."""


def _preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, size, size)``, bicubic with antialias, normalised."""
    x = images.float() / 255
    if x.shape[-2:] != (size, size):
        x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def _processor_settings(location: str, default_size: int, default_mean, default_std):
    """Input size and normalisation from a local folder's processor config, if it has one.

    Reads ``preprocessor_config.json`` (the hub's CLIP and DINOv2 folders) or the
    ``image_processor`` part of ``processor_config.json`` (what transformers 5 saves).
    """
    folder = Path(location)
    config = None
    if (folder / "preprocessor_config.json").is_file():
        config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    elif (folder / "processor_config.json").is_file():
        config = json.loads((folder / "processor_config.json").read_text(encoding="utf-8")).get("image_processor")
    if not config:
        return default_size, default_mean, default_std
    size = config.get("crop_size") or config.get("size") or default_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or default_size
    return int(size), tuple(config.get("image_mean", default_mean)), tuple(config.get("image_std", default_std))


def _unavailable(what: str, location: str, err: Exception, option: str) -> BackboneUnavailable:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    if Path(location).exists():
        hint = f"{location!r} exists but is not a saved {what} model folder (config.json + weights)"
    else:
        hint = (
            f"{location!r} is not a local folder, so it must come from the Hugging Face Hub"
            + (" and HF_HUB_OFFLINE=1 forbids downloads" if offline else ", which could not be reached")
            + f"; on a connected machine run `hf download {location} --local-dir DIR` and pass {option} DIR"
        )
    return BackboneUnavailable(f"cannot load the {what} model: {hint} ({type(err).__name__}: {_first_line(err)})")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


class ClipImageFeatures(nn.Module):
    """CLIP's image tower: projected image embeddings (``projection_dim`` features, unnormalised)."""

    def __init__(self, model, image_size: int, mean, std):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.image_size, self.mean, self.std = image_size, mean, std
        self.num_features = int(model.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = _preprocess(images, self.image_size, self.mean, self.std)
        pixels = pixels.to(self.visual_projection.weight.device, self.visual_projection.weight.dtype)
        pooled = self.vision_model(pixel_values=pixels).pooler_output  # (B, hidden)
        return self.visual_projection(pooled).float()  # (B, projection_dim)


class ClipEmbedder(nn.Module):
    """A CLIP model for CLIPScore: image and caption embeddings in the shared space.

    Built from ``.pooler_output`` and the projections directly, because the convenience methods
    changed their return types in transformers 5 (and torchmetrics' CLIPScore broke with them).
    """

    def __init__(self, model, tokenizer, image_size: int, mean, std, name: str = ""):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_features = ClipImageFeatures(model, image_size, mean, std)
        self.max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                              int(model.config.text_config.max_position_embeddings))
        self.name = name

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> ``(B, projection_dim)``."""
        return self.image_features(images)

    @torch.no_grad()
    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        """Captions -> ``(B, projection_dim)``; captions longer than CLIP's context are truncated."""
        device = self.model.text_projection.weight.device
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        return self.model.text_projection(pooled).float()


class Dinov2Features(nn.Module):
    """DINOv2's class token after the final layer norm (``hidden_size`` features)."""

    def __init__(self, model, image_size: int, mean, std):
        super().__init__()
        self.model = model.eval()
        self.image_size, self.mean, self.std = image_size, mean, std
        self.num_features = int(model.config.hidden_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = _preprocess(images, self.image_size, self.mean, self.std)
        weight = next(self.model.parameters())
        return self.model(pixel_values=pixels.to(weight.device, weight.dtype)).pooler_output.float()


class InceptionFeatures(nn.Module):
    """The standard FID network: torch-fidelity's port of the TF Inception v3, 2048-d pool features."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_features = 2048
        self.image_size = 299

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.to(torch.uint8)).float()  # resizes to 299 itself


def load_clip(model: str | Path = DEFAULT_CLIP_MODEL, device=None) -> ClipEmbedder:
    """Load a CLIP model (hub id or local folder) for CLIPScore and CLIP features.

    Raises:
        BackboneUnavailable: the model cannot be loaded (missing folder, not CLIP, or a hub id
            that is not cached while the hub cannot be reached).
    """
    location = str(model)
    source = resolve_hub_model(location, what="CLIP backbone", option="--clip-model PATH", marker="config.json",
                               error=BackboneUnavailable)
    from transformers import AutoConfig, AutoTokenizer, CLIPModel

    try:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type != "clip":  # from_pretrained would load random weights with a warning
            raise BackboneUnavailable(f"{location!r} holds a {model_type!r} model, not CLIP (for --clip-model)")
        clip = CLIPModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise _unavailable("CLIP", location, err, "--clip-model") from err
    size, mean, std = _processor_settings(source, int(clip.config.vision_config.image_size),
                                          OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    return ClipEmbedder(clip.to(device or "cpu").eval(), tokenizer, size, mean, std, name=location)


def load_dinov2(model: str | Path = DEFAULT_DINOV2_MODEL, device=None) -> Dinov2Features:
    """Load DINOv2 (hub id or local folder) as a feature network.

    Raises:
        BackboneUnavailable: the model cannot be loaded (or is a hub id that is not cached while
            the hub cannot be reached).
    """
    location = str(model)
    source = resolve_hub_model(location, what="DINOv2 backbone", option="--feature-model PATH", marker="config.json",
                               error=BackboneUnavailable)
    from transformers import AutoConfig, AutoModel

    try:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type != "dinov2":
            raise BackboneUnavailable(f"{location!r} holds a {model_type!r} model, not DINOv2 (for --feature-model)")
        network = AutoModel.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise _unavailable("DINOv2", location, err, "--feature-model") from err
    size, mean, std = _processor_settings(source, 224, IMAGENET_MEAN, IMAGENET_STD)
    return Dinov2Features(network.to(device or "cpu"), size, mean, std)


def load_inception(weights_path: str | Path | None = None, device=None) -> InceptionFeatures:
    """Load the Inception v3 FID network through torch-fidelity (the ``inception`` extra).

    Args:
        weights_path: a local ``pt_inception-2015-12-05-6726825d.pth``; without it torch-fidelity
            downloads the file from GitHub on first use.

    Raises:
        BackboneUnavailable: torch-fidelity is not installed, or the weights cannot be had.
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as err:
        raise BackboneUnavailable(
            "the inception backbone needs torch-fidelity: pip install 'dishgen[inception]' (it pulls "
            "torchvision); or use --feature-backbone clip or dinov2"
        ) from err
    from torchmetrics.image.fid import NoTrainInceptionV3

    if weights_path is not None and not Path(weights_path).is_file():
        raise BackboneUnavailable(f"Inception weights file {str(weights_path)!r} does not exist")
    try:
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                     feature_extractor_weights_path=None if weights_path is None else str(weights_path))
    except Exception as err:  # torch-fidelity raises whatever its downloader raised
        raise BackboneUnavailable(
            f"cannot load the Inception weights ({type(err).__name__}: {_first_line(err)}); download "
            f"{INCEPTION_WEIGHTS_URL} on a connected machine and pass --feature-model PATH_TO_PTH"
        ) from err
    return InceptionFeatures(network).to(device or "cpu")


def load_feature_network(
    backbone: str, model: str | Path | None = None, *, clip: ClipEmbedder | None = None, device=None
) -> nn.Module:
    """Load the feature network for FID, KID and memorization.

    Args:
        backbone: ``inception``, ``clip`` or ``dinov2``.
        model: a hub id or local folder (clip, dinov2) or a weights file (inception); ``None``
            uses the default (for ``clip``: the CLIP model already loaded for CLIPScore, if any).
        clip: an already loaded CLIP model to reuse for the ``clip`` backbone.
        device: where to run it.

    Returns:
        An ``nn.Module`` mapping uint8 images to ``(B, D)`` features, with ``num_features``.
    """
    if backbone == "inception":
        return load_inception(model, device=device)
    if backbone == "clip":
        if clip is not None and (model is None or str(model) == clip.name):
            return clip.image_features
        return load_clip(model or DEFAULT_CLIP_MODEL, device=device).image_features
    if backbone == "dinov2":
        return load_dinov2(model or DEFAULT_DINOV2_MODEL, device=device)
    raise BackboneUnavailable(f"unknown feature backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


@torch.no_grad()
def extract_features(network: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Run ``network`` over uint8 images ``(N, 3, H, W)`` in batches -> ``(N, D)`` float32 on the CPU."""
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    out = [network(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, getattr(network, "num_features", 0))
