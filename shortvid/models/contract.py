"""The contract every servable model honours: what code outside ``shortvid.models`` may rely on.

Every registered model (``create_model(name, ...)``: the TSN ``VideoClassifier``s and the composites
``fused`` and ``by_frame_count``) is a ``ServableModel``; ``tests/test_models.py`` checks each one.
Code that loads a run's model relies on this contract, not on the class (timm's way).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class ServableModel(Protocol):
    """A video model as serving, export, the run directory, evaluation and distillation use it.

    ``model(frames, mask=None, **extra) -> logits``: ``frames`` float ``[B, T, 3, H, W]``, normalised per
    ``data_config``; ``mask`` bool ``[B, T]`` (True = a real frame), ``None`` meaning every frame is
    real; logits ``[B, num_classes]``, turned into scores by the run's score function (sigmoid or
    softmax, ``preprocess.json``). ``T`` may be any count from 1 up. Padding is invisible: the
    values of masked frames (and of their motion frames) never change the logits, and in eval mode a
    padded video gets the logits its valid frames give alone, unpadded. Used by
    ``infer.backends.TorchBackend`` (padded dynamic batches), ``export`` (traced without a mask), and
    ``infer.backends.OnnxBackend``, which runs a padded batch as unpadded groups and so relies on the
    equality.

    ``inputs``: the keyword inputs ``extra`` the model takes besides frames and mask, a tuple in the order
    of ``models.inputs.INPUT_NAMES``: ``motion`` float ``[B, T, M, 3, H, W]`` (the frames after each keyframe,
    normalised as the frames), ``audio`` float ``[B, mels, n_frames]`` (log-mel) and ``audio_mask`` bool
    ``[B]`` (True = real sound; the audio of other rows never changes the logits);
    docs/motion-and-sound.md. ``()`` for a keyframes-only model, as every run made before them. A model
    not given an input it takes raises ``ValueError``; inputs it does not take are ignored. Callers take
    them from a batch with ``models.inputs.model_inputs``; ``export`` makes them the ONNX graph's inputs
    after ``frames``. Their sizes: ``motion_frames`` (``M``, 0 without motion) and ``mels``.

    ``config``: the keyword arguments that rebuild the architecture, name included:
    ``create_model(**config)`` then ``load_state_dict`` gives the same model. ``RunDir`` saves it in
    every checkpoint (``model_config``) and ``RunDir.load_model`` rebuilds the model from it;
    ``shortvid fuse`` and ``shortvid adaptive`` nest their members' configs in theirs.

    ``num_classes``: the logits' width (distillation checks teacher and student agree; composites
    check their members). ``data_config``: timm's preprocessing of the model's input (``mean``,
    ``std``, ``input_size``, ...); training normalises frames with it and stores it in the run.

    ``forward_all(frames, mask=None, **extra)``: ``{"logits": [B, C]}`` plus whatever extra outputs the model
    has (a ``VideoClassifier`` adds ``features``, with its ImageNet head ``imagenet``, and with motion or
    sound ``motion_embedding`` / ``audio_embedding``); a trained
    run used as a distillation teacher is called this way. ``imagenet_head``: the backbone's
    1000-way classifier, or ``None`` (always ``None`` for composites): ImageNet distillation needs it.

    Plus the ``torch.nn.Module`` basics the callers use: ``to``, ``eval``, ``state_dict``,
    ``load_state_dict``, ``parameters``, ``modules``.

    Training a model from a config needs more than this: the TSN parts (``backbone`` for freezing,
    ``forward_features``/``forward_head`` for cached teacher features, ``embed`` for the other
    modalities' embeddings, ``reset_classifier``, ``num_features``), which ``VideoClassifier`` has and
    the composites do not.
    """

    config: dict[str, Any]
    num_classes: int
    imagenet_head: nn.Module | None
    inputs: tuple[str, ...]
    motion_frames: int
    mels: int

    @property
    def data_config(self) -> dict[str, Any]: ...

    def __call__(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                 audio: Tensor | None = None, audio_mask: Tensor | None = None) -> Tensor: ...

    def forward(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                audio: Tensor | None = None, audio_mask: Tensor | None = None) -> Tensor: ...

    def forward_all(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                    audio: Tensor | None = None, audio_mask: Tensor | None = None) -> dict[str, Tensor]: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...
