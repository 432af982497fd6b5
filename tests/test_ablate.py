"""`shortvid ablate`: every table from one resumable run (tiny corpus, one epoch per model)."""

import json
import shutil

import pytest
import yaml

from shortvid.cli import main

pytestmark = pytest.mark.slow  # trains a dozen models


@pytest.fixture(scope="module")
def ablation(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    data = root / "data"
    shutil.copytree(tiny_corpus, data)  # hard-set mining writes a split into the dataset
    out = root / "out"
    assert main(["ablate", "--preset", "tiny", "--data", str(data), "--out", str(out), "--epochs", "1", "--quiet",
                 "--report", str(root / "ABLATION.md")]) == 0
    return out


def test_all_five_tables_are_written(ablation):
    text = (ablation / "ABLATION.md").read_text()
    assert text == (ablation.parent / "ABLATION.md").read_text()
    for heading in ("## 1. 3 keyframes vs 8 frames", "## 2. Distillation", "## 3. Hard-set fine-tuning",
                    "## 4. Aggregators", "## 5. Adaptive I-frame model", "## 6. Per-group specialists"):
        assert heading in text
    for row in ("| 3 keyframes |", "| 8 uniform frames |", "distilled |", "| NeXtVLAD |",
                "separate 1/2/3-frame models"):
        assert row in text
    summary = json.loads((ablation / "ablation.json").read_text())
    evaluations = {k: v for k, v in summary["results"].items() if k.startswith("eval_")}
    assert len(evaluations) == 12
    fusion = summary["results"]["fuse"]
    assert fusion["rule"] in fusion["rules"] and set(fusion["groups"]) == {
        name[len("train_group_"):] for name in summary["results"] if name.startswith("train_group_")}
    kept = fusion["rules"][fusion["rule"]]["mean_jaccard"]
    assert summary["results"]["eval_fused"]["mean_jaccard"] == pytest.approx(kept, abs=1e-6)
    for result in evaluations.values():
        assert 0.0 <= result["mean_jaccard"] <= 1.0 and result["total_ms"] > 0 and result["failed"] == 0


def test_each_model_saw_what_its_row_says(ablation):
    metrics = ablation / "metrics"
    assert set(json.loads((metrics / "frames8.json").read_text())["frames_per_video"]) == {"8"}
    assert set(json.loads((metrics / "student.json").read_text())["frames_per_video"]) == {"3"}
    adaptive = json.loads((metrics / "student_adaptive.json").read_text())
    assert min(int(n) for n in adaptive["frames_per_video"]) < 3  # fewer keyframes, fewer frames
    distilled = yaml.safe_load((ablation / "runs" / "student_distilled" / "config.yaml").read_text())["distill"]
    assert distilled["teacher"] == str(ablation / "runs" / "teacher") and distilled["cache"] is True
    summary = json.loads((ablation / "ablation.json").read_text())
    assert summary["results"]["eval_student_adaptive"]["few_keyframes"]["videos"] > 0


def test_a_rerun_reuses_finished_steps(ablation, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in (ablation / "steps").iterdir()}
    data = json.loads((ablation / "ablation.json").read_text())["plan"]["data"]
    assert main(["ablate", "--preset", "tiny", "--data", data, "--out", str(ablation), "--epochs", "1"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (ablation / "steps").iterdir()} == before
    assert "..." not in capsys.readouterr().out  # no step started again


@pytest.fixture(scope="module")
def pretrained_ablation(tiny_corpus, tmp_path_factory):
    """`ablate --pretrained` on the tiny corpus, with a copy of it standing in for the source corpus."""
    root = tmp_path_factory.mktemp("ablate_pretrained")
    data, source, out = root / "data", root / "source", root / "out"
    shutil.copytree(tiny_corpus, data)
    shutil.copytree(tiny_corpus, source)
    assert main(["ablate", "--pretrained", "--preset", "tiny", "--data", str(data), "--out", str(out),
                 "--pretrain-preset", "tiny", "--pretrain-data", str(source), "--epochs", "1",
                 "--pretrain-epochs", "1", "--simclr-epochs", "1", "--quiet"]) == 0
    return out


def test_the_pretrained_tables_start_every_network_from_pretrain(pretrained_ablation):
    out = pretrained_ablation
    text = (out / "ABLATION.md").read_text()
    for heading in ("## 0. Pretraining", "## 1. 3 keyframes vs 8 frames", "## 2. Distillation through the K-way heads",
                    "## 3. Hard-set fine-tuning", "## 4. Aggregation heads", "## 5. Frame policies",
                    "## 6. Specialists"):
        assert heading in text
    for row in ("| from SimCLR |", "| NetFV |", "| BiGRU |", "| mean + MoE classifier |", "hard + as many easy",
                "| keyframes + near frames (`fill=near`) |", "On the `cuts` corpus"):
        assert row in text

    def config(run):
        return yaml.safe_load((out / "runs" / run / "config.yaml").read_text())

    supervised = str(out / "pretrain" / "supervised_test_resnet" / "backbone.pth")
    assert config("student")["model"]["checkpoint_path"] == supervised
    assert config("student_simclr")["model"]["checkpoint_path"] == str(out / "pretrain" / "simclr_test_resnet" /
                                                                         "backbone.pth")
    assert config("student_scratch")["model"]["checkpoint_path"] is None
    assert config("student_near")["data"]["cache"] == str(out / "cache3_near")
    assert json.loads((out / "cache3_near" / "cache.json").read_text())["frames"]["fill"] == "near"
    cuts = json.loads((out / "steps" / "cuts_corpus.json").read_text())["result"]
    assert cuts["splits"]["val"] > cuts["splits"]["train"]  # an evaluation set: nothing trains on it
    assert config("teacher")["model"]["checkpoint_path"].endswith("supervised_resnet10t/backbone.pth")
    distilled = config("student_distilled")
    assert distilled["distill"]["kind"] == "imagenet" and distilled["model"]["imagenet_head"] is True
    assert config("nextvlad")["optim"]["lr_scale"] == {"aggregator": 0.1}
    groups = [p.name for p in (out / "runs").iterdir() if p.name.startswith("group_")]
    assert groups and all(config(g)["model"]["init_from"] == str(out / "runs" / "student") for g in groups)
    assert config("hard_easy/frozen")["data"]["train_split"] != "hard"  # easy videos mixed in

    summary = json.loads((out / "ablation.json").read_text())
    classes = summary["results"]["source_corpus"]["classes"]
    from shortvid.run import RunDir

    assert RunDir(out / "runs" / "teacher").load_model().imagenet_head.out_features == classes  # the K-way head
    for name, result in summary["results"].items():
        if name.startswith("eval_"):
            assert 0.0 <= result["mean_jaccard"] <= 1.0 and result["failed"] == 0, name
