"""`shortvid ablate --senses`: the plan's runs and ABLATION.md's motion-and-sound table (no training here:
tests/test_av_paths.py trains and serves models with motion and sound)."""

import pytest

from shortvid.ablate import AblationPlan, SensesAblation
from shortvid.ablate.senses import VARIANTS, run_name, senses_report


def evaluation(mean: float, kinds: dict[str, tuple[int, float]], sound_ms: float | None = None) -> dict:
    result = {"mean_jaccard": mean, "top1": mean, "decode_ms": 5.0, "preprocess_ms": 0.5, "model_ms": 2.0,
              "total_ms": 8.0, "by_keyframes": {"1": {"videos": 3, "mean_jaccard": mean}},
              "by_kind": {kind: {"videos": n, "mean_jaccard": j} for kind, (n, j) in kinds.items()}}
    if sound_ms is not None:
        result["decode_audio_ms"] = sound_ms
    return result


def summary(fusions: tuple[str, ...]) -> dict:
    plan = AblationPlan(data="data/av", preset="av", senses=True, fusions=fusions)
    results = {"corpus": {"videos": 10, "splits": {"train": 6, "val": 4}, "keyframes_per_video": {"1": 10}},
               "eval_keyframes": evaluation(0.4, {"appearance": (10, 0.9), "motion": (10, 0.1), "sound": (30, 0.2)}),
               "eval_both": evaluation(0.8, {"appearance": (10, 0.85), "motion": (10, 0.5), "sound": (30, 0.7)}, 1.2)}
    for fusion in fusions:
        results[f"eval_{run_name('both', False, fusion)}"] = evaluation(0.7, {"appearance": (10, 0.8)})
    return {"plan": vars(plan) | {"fusions": list(fusions)}, "results": results, "seconds": {}, "wall_seconds": 60.0,
            "machine": {"cpu": "test CPU", "cores": 2, "torch": "x", "torch_threads": 2, "pyav": "y"}}


def test_the_table_reads_the_targets_off_its_rows():
    text = senses_report(summary(("gate",)))
    assert "| keyframes only | 0.400 | 0.900 | 0.100 | 0.200 |" in text
    assert "| + motion + sound | 0.800 | 0.850 | 0.500 | 0.700 |" in text and "| 1.2 |" in text
    assert "| gate | 0.700 | 0.800 | – | – |" in text and "| concat | 0.800 |" in text
    # videos-weighted over the motion (10) and sound (30) classes: (0.1 + 3 * 0.2) / 4, (0.5 + 3 * 0.7) / 4
    assert "keyframes alone score 0.175" in text and "the full model 0.650" in text
    assert "Appearance classes: -0.050" in text
    assert "--motion 2 --fusions 'gate' --modality-dropout 0.25`" in text  # the command that reruns it


def test_a_plan_without_fusions_has_no_fusion_rows():
    text = senses_report(summary(()))
    assert "| gate |" not in text and "| concat | 0.800 |" in text


@pytest.mark.parametrize(("name", "motion", "audio"), [("keyframes", 0, False), ("motion", 2, False),
                                                     ("sound", 0, True), ("both", 2, True)])
def test_each_variant_trains_on_its_inputs_and_the_shared_cache(tmp_path, name, motion, audio):
    ablation = SensesAblation(AblationPlan(data=str(tmp_path / "data"), out=str(tmp_path / "out"), senses=True))
    config = ablation.config(run_name(name, False, None), *(o.format(motion=2) for o in VARIANTS[name]))
    assert config.data.cache == str(tmp_path / "out" / "cache_av")
    assert (config.model.motion, config.model.audio) == (motion, audio)
    assert config.model.args["motion_args"] == {"backbone": "test_resnet", "scale": 1.0}
    assert config.model.args["fusion_args"] == {"dropout": 0.25} and config.model.args["stream_heads"] is True
