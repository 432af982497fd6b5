"""The video classifier: a per-frame backbone, a temporal aggregator and a video-level classifier; optionally
motion and sound encoders whose embeddings meet the frames' in a modality fusion (``models.modalities``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import Tensor, nn

from .aggregators import Aggregator, masked_mean
from .backbones import feature_dim
from .classifiers import ClassifierHead
from .inputs import DEFAULT_MELS
from .modalities import AudioEncoder, ModalityFusion, MotionEncoder


class VideoClassifier(nn.Module):
    """TSN-style model: ``frames [B, T, 3, H, W]`` -> backbone per frame -> aggregator -> logits.

    ``mask`` [B, T] (bool, True = real frame) marks the valid frames of padded videos. Given to
    ``forward``/``forward_features``, padded frames are not even run through the backbone, so
    they neither cost time nor move batch-norm statistics; their features come out as zeros.
    ``imagenet_head`` is the backbone's original 1000-way classifier, kept for distillation.
    ``config`` is set by ``create_model``: ``create_model(**config)`` rebuilds this architecture.

    Motion and sound (``models.modalities``): with a ``motion_encoder`` and/or an ``audio_encoder``, their
    embeddings and the aggregator's output meet in ``fusion`` (``{"visual", "motion", "audio"}`` -> the
    classifier's input), and ``inputs`` names what ``forward`` then needs besides the frames (``motion``;
    ``audio`` and ``audio_mask``). Without them (the default) the model, its state dict and its outputs
    are those of a keyframes-only TSN, and ``inputs`` is ``()``.

    ``stream_heads`` (with a fusion): a linear classifier on each modality's own embedding, trained beside
    the fused one (``forward_all``'s ``visual_logits``, ``motion_logits``, ``audio_logits``; the trainer adds
    their loss, ``optim.stream_loss``) and unused in inference. Without them the stream that fits the
    training set first (here, the RGB differences: they isolate the moving object) takes the whole loss and
    the others stop learning: the greedy learning of multi-modal networks (Wang et al., "What Makes
    Training Multi-Modal Classification Networks Hard?", CVPR 2020, whose per-modality losses this is).
    """

    def __init__(
        self,
        backbone: nn.Module,
        aggregator: Aggregator,
        classifier: ClassifierHead,
        imagenet_head: nn.Module | None = None,
        *,
        motion_encoder: MotionEncoder | None = None,
        audio_encoder: AudioEncoder | None = None,
        fusion: ModalityFusion | None = None,
        stream_heads: bool = False,
    ):
        super().__init__()
        self.num_features = feature_dim(backbone)
        if aggregator.in_features != self.num_features:
            raise ValueError(f"aggregator takes {aggregator.in_features} features, backbone gives {self.num_features}")
        dims = {"visual": aggregator.out_features}
        if motion_encoder is not None:
            dims["motion"] = motion_encoder.out_features
        if audio_encoder is not None:
            dims["audio"] = audio_encoder.out_features
        if fusion is not None and len(dims) == 1:
            raise ValueError("a modality fusion needs a motion or audio encoder to fuse with the frames")
        if fusion is None and len(dims) > 1:
            raise ValueError(f"a model with {' and '.join(list(dims)[1:])} needs a modality fusion")
        if fusion is not None and fusion.dims != dims:
            raise ValueError(f"the fusion takes {fusion.dims}, the model's modalities give {dims}")
        width = aggregator.out_features if fusion is None else fusion.out_features
        if classifier.in_features != width:
            raise ValueError(f"classifier takes {classifier.in_features} features, "
                             f"{'aggregator' if fusion is None else 'fusion'} gives {width}")
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.aggregator = aggregator
        self.classifier = classifier
        self.imagenet_head = imagenet_head
        self.motion_encoder = motion_encoder
        self.audio_encoder = audio_encoder
        self.fusion = fusion
        self.num_classes = classifier.num_classes
        if stream_heads and fusion is None:
            raise ValueError("stream heads classify each modality of a fusion: the model needs motion or audio")
        self.stream_heads = nn.ModuleDict({name: nn.Linear(width, self.num_classes) for name, width in dims.items()}) \
            if stream_heads else None
        # The extra inputs' sizes, for callers that make them (export's example inputs): motion frames a
        # keyframe (0: none) and log-mel bands (the contract's 64 when the model hears nothing).
        self.motion_frames = 0 if motion_encoder is None else motion_encoder.frames
        self.mels = DEFAULT_MELS if audio_encoder is None else audio_encoder.mels
        self.config: dict[str, Any] = {}

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inputs ``forward`` takes besides frames and mask, in ``INPUT_NAMES`` order."""
        return (("motion",) if self.motion_encoder is not None else ()) + \
            (("audio", "audio_mask") if self.audio_encoder is not None else ())

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's preprocessing per timm: input_size, interpolation, mean, std, crop_pct."""
        return timm.data.resolve_model_data_config(self.backbone)

    def forward_features(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-frame features ``[B, T, D]`` from one backbone pass over the valid frames."""
        batch, frames_per_video = frames.shape[:2]
        flat = frames.flatten(0, 1)
        valid = None if mask is None else mask.bool().flatten()
        if valid is not None and bool(valid.all()):
            valid = None
        if valid is not None:
            flat = flat[valid]
        if flat.shape[0] == 0:
            return frames.new_zeros(batch, frames_per_video, self.num_features)
        features = self.backbone(flat.contiguous(memory_format=torch.channels_last))
        if valid is not None:
            features = features.new_zeros(valid.shape[0], features.shape[1]).index_put((valid,), features)
        return features.view(batch, frames_per_video, -1)

    def embed(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
              audio: Tensor | None = None, audio_mask: Tensor | None = None) -> dict[str, Tensor]:
        """The other modalities' embeddings, ``{"motion": [B, Dm], "audio": [B, Da]}`` for the encoders the
        model has (``{}`` for a keyframes-only model). A missing input is a ``ValueError`` naming it;
        inputs the model does not take are ignored."""
        given = {"motion": motion, "audio": audio, "audio_mask": audio_mask}
        missing = [name for name in self.inputs if given[name] is None]
        if missing:
            raise ValueError(f"this model takes {', '.join(self.inputs)} besides frames and was not given "
                             f"{', '.join(missing)}: model(frames, mask, **models.inputs.model_inputs(model, batch))")
        out = {}
        if self.motion_encoder is not None:
            out["motion"] = self.motion_encoder(frames, motion, mask)
        if self.audio_encoder is not None:
            out["audio"] = self.audio_encoder(audio, audio_mask)
        return out

    def forward_head(self, features: Tensor, mask: Tensor | None = None, pre_logits: bool = False,
                     embeddings: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits ``[B, C]`` from frame features ``[B, T, D]`` (and, for a model with motion or sound, the
        ``embed`` output); the classifier's input (the video vector, or the fused one) if ``pre_logits``."""
        video = self.aggregator(features, mask)
        if self.fusion is not None:
            video = self.fusion({"visual": video, **(embeddings or {})})
        return video if pre_logits else self.classifier(video)

    def forward(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                audio: Tensor | None = None, audio_mask: Tensor | None = None) -> Tensor:
        embeddings = self.embed(frames, mask, motion=motion, audio=audio, audio_mask=audio_mask)
        return self.forward_head(self.forward_features(frames, mask), mask, embeddings=embeddings)

    def forward_all(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                    audio: Tensor | None = None, audio_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Everything training needs from one pass: ``logits`` [B, C], ``features`` [B, T, D] and,
        with the ImageNet head kept, ``imagenet`` [B, 1000]: its logits averaged over valid frames; with
        motion or sound, their embeddings ``motion_embedding`` [B, Dm] and ``audio_embedding`` [B, Da]; with
        ``stream_heads``, each modality's own logits ``NAME_logits`` [B, C]."""
        features = self.forward_features(frames, mask)
        embeddings = self.embed(frames, mask, motion=motion, audio=audio, audio_mask=audio_mask)
        if self.stream_heads is None:
            out = {"logits": self.forward_head(features, mask, embeddings=embeddings), "features": features}
        else:
            streams = {"visual": self.aggregator(features, mask), **embeddings}
            out = {"logits": self.classifier(self.fusion(streams)), "features": features}
            out.update({f"{name}_logits": head(streams[name]) for name, head in self.stream_heads.items()})
        if self.imagenet_head is not None:
            out["imagenet"] = masked_mean(self.imagenet_head(features), mask, dim=1)
        out.update({f"{name}_embedding": value for name, value in embeddings.items()})
        return out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class head with a fresh one for ``num_classes`` classes (same kind, same device)."""
        reference = next(self.classifier.parameters())
        self.classifier.reset_classifier(num_classes)
        self.classifier.to(device=reference.device, dtype=reference.dtype)
        if self.stream_heads is not None:
            for name, head in self.stream_heads.items():
                self.stream_heads[name] = nn.Linear(head.in_features, num_classes).to(reference.device,
                                                                                      reference.dtype)
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
