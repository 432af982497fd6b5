"""The CUDA paths (mixed precision training, GPU serving); skipped where there is no GPU.

Run on a GPU machine with `pytest tests/test_cuda.py`; CI machines have none.
"""

import numpy as np
import pytest
import torch

from shortvid.data.annotations import load_dataset
from shortvid.infer.classifier import Classifier
from shortvid.run import RunDir
from shortvid.train.trainer import train

from conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_mixed_precision_training_and_gpu_serving_agree_with_the_cpu(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "cuda_run"
    record = train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=3", "device=cuda", "optim.amp=true",
                               "data.augment=true"))
    assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"])
    assert len(RunDir(out).read_metrics()) == 3
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["scaler"], "the gradient scaler's state is saved with the checkpoint"

    on_gpu = Classifier.load(out, device="cuda")
    on_cpu = Classifier.load(out, device="cpu")
    assert on_gpu.device.type == "cuda" and on_gpu.backend.name == "torch"  # auto on a GPU: PyTorch
    for sample in load_dataset(tiny_corpus, "val").samples:
        clip = on_cpu.read(sample.path)
        gpu_scores, _ = on_gpu.scores(clip)
        cpu_scores, _ = on_cpu.scores(clip)
        np.testing.assert_allclose(gpu_scores, cpu_scores, atol=2e-3)
