"""Motion and sound encoders and the modality fusions they meet the frames in (issue 21).

A ``VideoClassifier`` with ``motion=M`` and/or ``audio=True`` (``build_tsn``) embeds each extra modality
into one vector a video and fuses it with the visual aggregator's output before the classifier:

    frames [B, T, 3, S, S] -> backbone per frame -> aggregator --------> "visual" [B, Dv] -+
    frames + motion [B, T, M, 3, S, S] -> MotionEncoder ---------------> "motion" [B, Dm] -+-> fusion -> classifier
    audio [B, mels, n] + audio_mask [B] -> AudioEncoder ---------------> "audio"  [B, Da] -+

- ``MotionEncoder``: TSN's RGB difference (each motion frame less the one before it, the first less the
  keyframe), made inside the graph from the normalised frames, stacked into ``3 * M`` channels after the
  keyframe's own 3 (``keyframe``, early fusion as in Motion Fused Frames: a difference alone cannot tell a
  light object moving right from a dark one moving left) and average-pooled to ``scale`` of the size,
  through a timm backbone with ``3 * (M + 1)`` input channels; per-frame embeddings are averaged over the
  valid frames (``mask``), and masked frames never reach the backbone.
- ``AudioEncoder``: a batch norm over the mel bands (PANNs' ``bn0``: log-mel values lie around -23..5),
  then a timm backbone with one input channel on the ``[mels, n_frames]`` image, globally pooled. A video
  without real sound (``audio_mask`` False) gets a learned ``no_sound`` vector instead, so its audio
  never matters; it is not run through the backbone either, except in a traced (ONNX) graph.
- Fusions (``FUSIONS`` registry: ``concat``, ``gate``, ``attention``): ``dims`` names each modality's
  width, ``forward`` takes ``{name: [B, width]}`` and gives ``[B, out_features]``.

Both encoders default to timm's ``mobilenetv3_small_100`` (1.5 M parameters, 1024-d embeddings), run
channels-last. Measured on one CPU thread (shared AMD EPYC, batch 1, 224 px frames pooled to 112): motion
5.5-6 ms for one keyframe and 8-10 ms for three (M = 1 or 2), audio 4 ms for 2 s (64 x 198 log-mel);
``resnet10t`` took 10 / 23-24 / 9 ms. Against the keyframes' own pass (three 224 px frames: ResNet50
about 320 ms, MobileNetV3-Large 30 ms) that is about 4%, or about half for MobileNetV3-Large.
MobileNetV3 is also what EfficientAT trains on log-mel images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aggregators import ContextGating, masked_mean
from .backbones import CheckpointError, create_backbone, feature_dim
from .inputs import DEFAULT_MELS
from .registry import register_fusion

DEFAULT_ENCODER = "mobilenetv3_small_100"
MIN_AUDIO_FRAMES = 1


class MotionEncoder(nn.Module):
    """``frames [B, T, 3, S, S]``, ``motion [B, T, M, 3, S, S]`` (normalised like the frames), ``mask [B, T]``
    -> ``[B, out_features]``: the RGB differences of each frame's ``M`` motion frames, after the keyframe itself
    (``keyframe``), through a backbone with ``3 * M`` (+ 3) input channels, at ``scale`` of the size
    (``1 / scale`` must be a whole number: average pooling), averaged over the valid frames.

    ``keyframe``: the differences say where pixels changed and by how much, not which side of a moving edge is
    the object: a light object moving right and a dark one moving left change the same pixels by the same
    amounts. With the keyframe beside them the encoder sees which side the object is on, so direction (and
    with it rotation) is decidable. Pooling and differencing are both linear, so the frames are pooled first
    (less to subtract)."""

    def __init__(self, frames: int, backbone: str = DEFAULT_ENCODER, scale: float = 0.5, *, keyframe: bool = True,
                 pretrained: bool = False, backbone_args: dict[str, Any] | None = None):
        super().__init__()
        if frames < 1:
            raise ValueError(f"a motion encoder needs at least one motion frame a keyframe, not {frames}")
        stride = round(1 / scale) if scale > 0 else 0
        if stride < 1 or abs(stride * scale - 1) > 1e-6:
            raise ValueError(f"motion scale must be 1/n for a whole n (0.5, 0.25, 1.0), not {scale}")
        self.frames = frames
        self.scale = scale
        self.stride = stride
        self.keyframe = keyframe
        net, _ = create_backbone(backbone, pretrained=pretrained, in_chans=3 * (frames + keyframe),
                                 **(backbone_args or {}))
        self.backbone = net.to(memory_format=torch.channels_last)  # as the frame backbone: ~15% faster on CPUs
        self.out_features = feature_dim(self.backbone)

    def differences(self, frames: Tensor, motion: Tensor) -> Tensor:
        """``[N, 3 * M, S / stride, S / stride]`` RGB differences of ``frames [N, 3, S, S]`` and ``motion
        [N, M, 3, S, S]``: channels ``3i..3i+2`` are motion frame ``i`` less the frame before it."""
        return self.stacked(frames, motion)[:, 3 * self.keyframe:]

    def stacked(self, frames: Tensor, motion: Tensor) -> Tensor:
        """The backbone's input ``[N, 3 * (M + keyframe), S / stride, S / stride]``: the pooled keyframe (with
        ``keyframe``), then ``differences``."""
        stack = torch.cat([frames.unsqueeze(1), motion], 1).flatten(1, 2)  # [N, 3 (M + 1), S, S]
        if self.stride > 1:
            stack = F.avg_pool2d(stack, self.stride)
        changes = stack[:, 3:] - stack[:, :-3]
        return torch.cat([stack[:, :3], changes], 1) if self.keyframe else changes

    def forward(self, frames: Tensor, motion: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, count = frames.shape[:2]
        if motion.dim() != 6 or tuple(motion.shape[:3]) != (batch, count, self.frames) \
                or motion.shape[3:] != frames.shape[2:]:
            raise ValueError(f"motion must be [B, T, M={self.frames}, 3, S, S] with frames {tuple(frames.shape)}, "
                             f"not {tuple(motion.shape)}")
        keyframes, following = frames.flatten(0, 1), motion.flatten(0, 1)
        valid = None if mask is None else mask.bool().flatten()
        if valid is not None and bool(valid.all()):
            valid = None
        if valid is not None:  # masked frames are never computed (nor move batch-norm statistics)
            keyframes, following = keyframes[valid], following[valid]
        if keyframes.shape[0] == 0:
            return frames.new_zeros(batch, self.out_features)
        features = self.backbone(self.stacked(keyframes, following).contiguous(memory_format=torch.channels_last))
        if valid is not None:
            features = features.new_zeros(valid.shape[0], features.shape[1]).index_put((valid,), features)
        return masked_mean(features.view(batch, count, -1), mask, dim=1)


class AudioEncoder(nn.Module):
    """``audio [B, mels, n_frames]`` (log-mel), ``audio_mask [B]`` bool -> ``[B, out_features]``: a batch norm
    over the mel bands, a backbone with one input channel on the ``[mels, n_frames]`` image, global pooling;
    rows without real sound get the learned ``no_sound`` vector.

    Any ``n_frames >= MIN_AUDIO_FRAMES`` (1) works: timm's CNNs pad every strided layer and pool globally
    (0.25 s, 23 frames, is still 1 x 1 after MobileNetV3's 32x downsampling). Videos without sound are
    skipped by the backbone outside a traced graph, so in training they never move its batch-norm
    statistics; the outputs are the same either way.

    ``checkpoint_path``: start from a saved encoder's weights (``load_checkpoint``; then nothing is downloaded),
    e.g. ``RUN/audio_encoder.pth`` of ``shortvid pretrain --method avc``."""

    def __init__(self, mels: int = DEFAULT_MELS, backbone: str = DEFAULT_ENCODER, *, pretrained: bool = False,
                 backbone_args: dict[str, Any] | None = None, checkpoint_path: str | None = None):
        super().__init__()
        self.mels = mels
        self.backbone_name = backbone
        self.norm = nn.BatchNorm1d(mels)
        net, _ = create_backbone(backbone, pretrained=pretrained and checkpoint_path is None, in_chans=1,
                                 **(backbone_args or {}))
        self.backbone = net.to(memory_format=torch.channels_last)
        self.out_features = feature_dim(self.backbone)
        # initialised as ViT's class token (std 0.02): not zero, where a per-modality LayerNorm is flat
        self.no_sound = nn.Parameter(torch.randn(self.out_features) * 0.02)
        if checkpoint_path is not None:
            self.load_checkpoint(checkpoint_path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """This encoder's weights from ``path``, a state dict of an ``AudioEncoder`` like it (``shortvid pretrain
        --method avc`` writes ``RUN/audio_encoder.pth``): every key, each of its shape. A ``CheckpointError``
        naming the file when it cannot be read or does not fit (another backbone or mel band count)."""
        path = os.fspath(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(path, "no such audio encoder checkpoint") from None
        except Exception as exc:
            raise CheckpointError(path, f"cannot read the audio encoder checkpoint ({type(exc).__name__}: {exc})") \
                from exc
        if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
            raise CheckpointError(path, "not a state dict of tensors")
        own = self.state_dict()
        shapes = [f"{key} {tuple(value.shape)} (here {tuple(own[key].shape)})" for key, value in state.items()
                  if key in own and value.shape != own[key].shape]
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if shapes or missing or unexpected:
            raise CheckpointError(path, (
                f"does not fit an audio encoder of {self.mels} mel bands on {self.backbone_name}"
                f": {len(shapes)} of other shapes (e.g. {shapes[:2]}), {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); pass the audio_args it was trained with"))
        self.load_state_dict(state)

    def embed(self, audio: Tensor) -> Tensor:
        """The backbone's embeddings ``[N, out_features]`` of log-mel images ``[N, mels, n_frames]``."""
        return self.backbone(self.norm(audio).unsqueeze(1))

    def forward(self, audio: Tensor, audio_mask: Tensor) -> Tensor:
        if audio.dim() != 3 or audio.shape[1] != self.mels or audio.shape[2] < MIN_AUDIO_FRAMES:
            raise ValueError(f"audio must be [B, mels={self.mels}, n_frames >= {MIN_AUDIO_FRAMES}], "
                             f"not {tuple(audio.shape)}")
        if tuple(audio_mask.shape) != (audio.shape[0],):
            raise ValueError(f"audio_mask must be [B={audio.shape[0]}], not {tuple(audio_mask.shape)}")
        sound = audio_mask.bool()
        if torch.jit.is_tracing() or bool(sound.all()):
            embedded = self.embed(audio)
        else:
            rows = sound.nonzero().flatten()
            embedded = audio.new_zeros(audio.shape[0], self.out_features)
            if rows.numel():
                heard = self.embed(audio[rows])
                embedded = embedded.to(heard.dtype).index_copy(0, rows, heard)
        return torch.where(sound.unsqueeze(1), embedded, self.no_sound.to(embedded.dtype))


class ModalityFusion(nn.Module):
    """Base class: ``forward({name: [B, dims[name]]}) -> [B, out_features]``, modalities taken in ``dims``' order.
    To add one, subclass it and register it with ``@register_fusion("name")``; it is built as
    ``cls(dims, **fusion_args)``.

    ``dropout`` is modality dropout: in training, each video's embedding of each modality is zeroed with this
    probability (never all of one video's), so the classifier cannot lean on one modality alone and each
    stream keeps learning; zeros then meet the fusion's own layers (a LayerNorm's bias), a learned "absent"
    input. Evaluation and export are unchanged, as are the parameters."""

    def __init__(self, dims: Mapping[str, int], out_features: int, *, dropout: float = 0.0):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"a modality fusion needs at least two modalities, not {list(dims)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"modality dropout must be in [0, 1), not {dropout}")
        self.dims = {name: int(width) for name, width in dims.items()}
        self.out_features = out_features
        self.dropout = dropout

    def in_order(self, embeddings: Mapping[str, Tensor]) -> list[Tensor]:
        """The embeddings in ``dims``' order (with modality dropout in training); a missing or extra modality is
        a ``ValueError``."""
        if set(embeddings) != set(self.dims):
            raise ValueError(f"{type(self).__name__} fuses {', '.join(self.dims)}, was given {', '.join(embeddings)}")
        ordered = [embeddings[name] for name in self.dims]
        if not self.training or self.dropout == 0.0:
            return ordered
        keep = drop_modalities(ordered[0].shape[0], len(ordered), self.dropout, ordered[0].device)
        return [x * keep[:, i, None].to(x.dtype) for i, x in enumerate(ordered)]


def drop_modalities(batch: int, modalities: int, p: float, device: torch.device | None = None) -> Tensor:
    """``[batch, modalities]`` bool: each entry kept with probability ``1 - p``, and in a row where none was,
    one drawn uniformly is kept."""
    keep = torch.rand(batch, modalities, device=device) >= p
    lost = ~keep.any(1)
    if bool(lost.any()):
        keep[lost, torch.randint(modalities, (int(lost.sum()),), device=device)] = True
    return keep

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


def _norms(dims: Mapping[str, int], norm: bool) -> nn.ModuleList:
    """A LayerNorm per modality (identity without ``norm``): puts embeddings of different backbones on one scale."""
    return nn.ModuleList(nn.LayerNorm(width) if norm else nn.Identity() for width in dims.values())


@register_fusion("concat")
class ConcatFusion(ModalityFusion):
    """The embeddings side by side, each through its own LayerNorm first (``norm``): the backbones' pooled
    features differ in scale (at initialisation, RMS 0.08 for ResNet50's frames, 0.07 for the audio
    encoder's, 0.0003 for the motion encoder's), and the classifier should not favour a modality by its
    scale alone."""

    def __init__(self, dims: Mapping[str, int], *, norm: bool = True, dropout: float = 0.0):
        super().__init__(dims, sum(dims.values()), dropout=dropout)
        self.norms = _norms(dims, norm)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([norm(x) for norm, x in zip(self.norms, self.in_order(embeddings), strict=True)], -1)


@register_fusion("gate")
class GatedFusion(ConcatFusion):
    """Concatenation (as ``concat``) then YouTube-8M's context gating, ``x * sigmoid(g(x))``, with the SE
    bottleneck NeXtVLAD uses (``reduction``): each feature is scaled by what all modalities say together,
    so a modality can be turned down where another says it does not help (silent audio, a still video)."""

    def __init__(self, dims: Mapping[str, int], *, norm: bool = True, reduction: int = 8, dropout: float = 0.0):
        super().__init__(dims, norm=norm, dropout=dropout)
        self.gating = ContextGating(self.out_features, reduction)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return self.gating(super().forward(embeddings))


@register_fusion("attention")
class AttentionFusion(ModalityFusion):
    """Attention over the modalities: each embedding projected to ``width`` (linear + LayerNorm), a small
    scorer (``hidden`` tanh units) gives each modality token a weight, softmax over modalities, weighted sum.
    The weights (``weights``) say per video which modality the model listened to."""

    def __init__(self, dims: Mapping[str, int], *, width: int = 512, hidden: int = 128, dropout: float = 0.0):
        super().__init__(dims, width, dropout=dropout)
        self.project = nn.ModuleList(nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims.values())
        self.scorer = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def tokens(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """``[B, modalities, width]``: each modality projected."""
        return torch.stack([p(x) for p, x in zip(self.project, self.in_order(embeddings), strict=True)], 1)

    def weights(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """``[B, modalities]``: each modality's attention weight (rows sum to 1), in ``dims``' order."""
        return self.scorer(self.tokens(embeddings)).squeeze(-1).softmax(-1)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        tokens = self.tokens(embeddings)
        weights = self.scorer(tokens).softmax(1)  # [B, modalities, 1]
        return (weights * tokens).sum(1)
