"""ABLATION.md from an ablation's summary: the seed's tables, each read against the seed's shape."""

from __future__ import annotations

from ..evaluate.report import markdown_table


def size_text(size: int | tuple[int, int] | list[int]) -> str:
    """A frame size as the reports write it: ``80`` (short side) or ``80x80``."""
    return f"{size[0]}x{size[1]}" if isinstance(size, tuple | list) else str(size)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def scratch_report(summary: dict) -> str:
    """ABLATION.md: the five tables, each with the seed's shape and whether this run has it."""
    r, s, plan = summary["results"], summary["seconds"], summary["plan"]

    def ev(name: str) -> dict:
        return r[f"eval_{name}"]

    def minutes(step: str) -> str:
        return f"{s[step] / 60:.1f}"

    student, frames8 = ev("student"), ev("frames8")
    parts = [
        "# Ablation: the seed's tables on the synthetic benchmark\n",
        f"Command: `shortvid ablate --preset {plan['preset']} --data {plan['data']} --out {plan['out']} "
        f"--seed {plan['seed']}`; every model trained from scratch on the CPU "
        f"({plan['epochs']} epochs, {size_text(plan['resize'])} px frames, {plan['input_size']} px crops, "
        "no augmentation), "
        "evaluated on the validation split one video at a time through the serving path "
        "(decode + preprocess + model, median ms/video).\n",
        f"Machine: {summary['machine']['cpu']}, {summary['machine']['cores']} cores, torch "
        f"{summary['machine']['torch']} ({summary['machine']['torch_threads']} threads), "
        f"PyAV {summary['machine']['pyav']}. "
        f"Corpus: {r['corpus']['videos']} videos {r['corpus']['splits']}, seed {plan['seed']}. "
        f"Whole ablation: {summary['wall_seconds'] / 60:.1f} min (steps already done by an earlier run count 0).\n",
        "## 1. 3 keyframes vs 8 frames\n",
        markdown_table(["frames", "mean Jaccard", "top-1", "decode ms", "model ms", "total ms/video", "train min"], [
            ["3 keyframes", pct(student["mean_jaccard"]), pct(student["top1"]), f"{student['decode_ms']:.1f}",
             f"{student['model_ms']:.1f}", f"{student['total_ms']:.1f}", minutes("train_student")],
            ["8 uniform frames", pct(frames8["mean_jaccard"]), pct(frames8["top1"]), f"{frames8['decode_ms']:.1f}",
             f"{frames8['model_ms']:.1f}", f"{frames8['total_ms']:.1f}", minutes("train_frames8")],
        ]),
        f"\nSeed: 3 I-frames about as accurate as 8 frames at a fraction of the time. Here: "
        f"{frames8['total_ms'] / student['total_ms']:.1f}x the time for "
        f"{frames8['mean_jaccard'] - student['mean_jaccard']:+.3f} mean Jaccard.\n",
        "## 2. Distillation (Hinton logits; no ImageNet heads exist without pretrained weights)\n",
    ]
    rows = []
    for alone, distilled, backbone in (("student", "student_distilled", plan["student"]),
                                       ("second", "second_distilled", plan["second_student"])):
        a, d = ev(alone), ev(distilled)
        rows.append([f"{backbone} alone", pct(a["mean_jaccard"]), pct(a["top1"]), f"{a['model_ms']:.1f}",
                     str(r[f"train_{alone}"]["params"])])
        rows.append([f"{backbone} distilled", pct(d["mean_jaccard"]), pct(d["top1"]), f"{d['model_ms']:.1f}",
                     str(r[f"train_{distilled}"]["params"])])
    teacher = ev("teacher")
    rows.append([f"teacher {plan['teacher']}", pct(teacher["mean_jaccard"]), pct(teacher["top1"]),
                 f"{teacher['model_ms']:.1f}", str(r["train_teacher"]["params"])])
    gains = [ev(d)["mean_jaccard"] - ev(a)["mean_jaccard"] for a, d in (("student", "student_distilled"),
                                                                        ("second", "second_distilled"))]
    parts += [markdown_table(["model", "mean Jaccard", "top-1", "model ms", "parameters"], rows),
              f"\nSeed: each distilled student beats the same student trained alone. Here: "
              f"{gains[0]:+.3f} and {gains[1]:+.3f} mean Jaccard.\n",
              "## 3. Hard-set fine-tuning\n"]
    hard = r["hard_mine"]
    frozen, full = ev("hard_frozen"), ev("hard_full")
    parts += [markdown_table(["model", "mean Jaccard", "top-1"], [
        ["before (the student)", pct(student["mean_jaccard"]), pct(student["top1"])],
        ["step 1: stem + 2 stages frozen", pct(frozen["mean_jaccard"]), pct(frozen["top1"])],
        ["step 2: whole network", pct(full["mean_jaccard"]), pct(full["top1"])],
    ]), f"\nHard set: {hard['hard']} of {hard['videos']} training videos. Seed: fine-tuning on the hard set "
        f"gains accuracy. Here: {full['mean_jaccard'] - student['mean_jaccard']:+.3f} after both steps.\n",
        "## 4. Aggregators\n"]
    nextvlad = ev("nextvlad")
    parts += [markdown_table(["aggregator", "mean Jaccard", "top-1", "model ms", "parameters"], [
        ["mean (TSN)", pct(student["mean_jaccard"]), pct(student["top1"]), f"{student['model_ms']:.1f}",
         str(r["train_student"]["params"])],
        ["NeXtVLAD", pct(nextvlad["mean_jaccard"]), pct(nextvlad["top1"]), f"{nextvlad['model_ms']:.1f}",
         str(r["train_nextvlad"]["params"])],
    ]), f"\nSeed: NeXtVLAD above mean pooling. Here: {nextvlad['mean_jaccard'] - student['mean_jaccard']:+.3f}.\n",
        "## 5. Adaptive I-frame model vs fixed 3 frames\n"]
    adaptive, members = ev("student_adaptive"), ev("by_frame_count")
    few = student["few_keyframes"]["videos"]
    parts += [markdown_table(["model", "mean Jaccard", f"on videos with < 3 keyframes ({few})", "decode ms",
                      "total ms/video"], [
        ["fixed 3 frames (keyframes repeated)", pct(student["mean_jaccard"]),
         pct(student["few_keyframes"]["mean_jaccard"]), f"{student['decode_ms']:.1f}", f"{student['total_ms']:.1f}"],
        ["adaptive: one TSN fed the keyframes there are", pct(adaptive["mean_jaccard"]),
         pct(adaptive["few_keyframes"]["mean_jaccard"]), f"{adaptive['decode_ms']:.1f}",
         f"{adaptive['total_ms']:.1f}"],
        ["adaptive: separate 1/2/3-frame models", pct(members["mean_jaccard"]),
         pct(members["few_keyframes"]["mean_jaccard"]), f"{members['decode_ms']:.1f}", f"{members['total_ms']:.1f}"],
    ]), "\nSeed: the adaptive model keeps the accuracy and saves the time of frames it does not decode.\n",
        "## 6. Per-group specialists fused with the general model\n"]
    fusion, fused = r["fuse"], ev("fused")
    rows = [["general (the student)", pct(student["mean_jaccard"]), pct(student["top1"]),
             f"{student['model_ms']:.1f}"]]
    rows += [[f"fused, rule `{rule}`" + (" (kept)" if rule == fusion["rule"] else ""), pct(result["mean_jaccard"]),
              pct(result["top1_hit"]), f"{fused['model_ms']:.1f}" if rule == fusion["rule"] else "–"]
             for rule, result in fusion["rules"].items()]
    parts += [markdown_table(["model", "mean Jaccard", "top-1", "model ms"], rows), "",
              markdown_table(["group", "videos", "general", "fused"], [
                  [group, str(g["videos"]), pct(g["general"]), pct(g["fused"])]
                  for group, g in fusion["groups"].items()]),
              "\nThe rule and the decision policy are chosen on this same validation split (as every run's policy "
              "is), so the fused numbers lean optimistic by what that choice can fit.\n",
              "## Time per step\n",
        markdown_table(["step", "seconds"], [[name, f"{seconds:.0f}"] for name, seconds in s.items()]), ""]
    return "\n".join(parts)


def pretrained_report(summary: dict) -> str:
    """The pretrained regime's tables (``ablate --pretrained``), each with the seed's shape and this run's."""
    r, s, plan = summary["results"], summary["seconds"], summary["plan"]

    def ev(name: str) -> dict:
        return r[f"eval_{name}"]

    def row(label: str, name: str, *extra: str) -> list[str]:
        e = ev(name)
        return [label, pct(e["mean_jaccard"]), pct(e["top1"]), f"{e['model_ms']:.1f}", f"{e['total_ms']:.1f}", *extra]

    def gain(name: str, base: str = "student") -> str:
        return f"{ev(name)['mean_jaccard'] - ev(base)['mean_jaccard']:+.3f}"

    header = ["model", "mean Jaccard", "top-1", "model ms", "total ms/video"]
    source = r["source_corpus"]
    pretrain_rows = []
    for name in (plan["student"], plan["second_student"], plan["teacher"]):
        p = r[f"pretrain_{name}"]["last_epoch"]
        pretrain_rows.append([f"{name} supervised", f"{p['val_top1']:.3f}",
                              f"{s[f'pretrain_{name}'] / 60:.1f}"])
    simclr_step = f"simclr_{plan['student']}"
    pretrain_rows.append([f"{plan['student']} SimCLR", f"loss {r[simclr_step].get('final_loss', float('nan')):.3f}",
                          f"{s[simclr_step] / 60:.1f}"])
    student = ev("student")
    parts = [
        "# Ablation, pretrained regime: the seed's tables from `shortvid pretrain` backbones\n",
        f"Command: `shortvid ablate --pretrained --preset {plan['preset']} --data {plan['data']} --out {plan['out']} "
        f"--pretrain-data {plan['pretrain_data']} --seed {plan['seed']} --epochs {plan['epochs']} "
        f"--pretrain-epochs {plan['pretrain_epochs']} --simclr-epochs {plan['simclr_epochs']}`. "
        f"Every network starts from a backbone pretrained on the "
        f"`{plan['pretrain_preset']}` corpus ({source['videos']} videos, {source['classes']} classes, none of them "
        f"the benchmark's): supervised with a K-way head ({plan['pretrain_epochs']} epochs), or SimCLR "
        f"({plan['simclr_epochs']} epochs, labels unused). Then fine-tuned on the benchmark ({plan['epochs']} epochs, "
        f"AdamW lr {plan['finetune_lr']}, {size_text(plan['resize'])} px frames, {plan['input_size']} px crops) "
        "and evaluated on "
        "its validation split one video at a time through the serving path.\n",
        f"Machine: {summary['machine']['cpu']}, {summary['machine']['cores']} cores, torch "
        f"{summary['machine']['torch']}. Whole ablation: {summary['wall_seconds'] / 60:.1f} min (steps already done "
        "by an earlier run count 0).\n",
        "## 0. Pretraining\n",
        markdown_table(["backbone", f"source validation top-1 ({source['classes']} classes; SimCLR: final loss)",
                        "minutes"], pretrain_rows),
        "",
        markdown_table(header, [row("from scratch (same recipe, lr "
                                    f"{plan['scratch_lr']})", "student_scratch"),
                                row("from SimCLR", "student_simclr"),
                                row("from supervised pretraining", "student")]),
        f"\nSupervised pretraining {gain('student', 'student_scratch')} over from-scratch; SimCLR "
        f"{gain('student_simclr', 'student_scratch')}.\n",
        "## 1. 3 keyframes vs 8 frames\n",
        markdown_table([*header, "decode ms"],
                       [row("3 keyframes", "student", f"{student['decode_ms']:.1f}"),
                        row("8 uniform frames", "frames8", f"{ev('frames8')['decode_ms']:.1f}")]),
        f"\nSeed: 3 I-frames about as accurate as 8 frames at a fraction of the time. Here: "
        f"{ev('frames8')['total_ms'] / student['total_ms']:.1f}x the time for {gain('frames8')} mean Jaccard.\n",
        "## 2. Distillation through the K-way heads (normalised MSE + BCE)\n",
        markdown_table(header, [row(f"{plan['student']} alone", "student"),
                                row(f"{plan['student']} distilled", "student_distilled"),
                                row(f"{plan['second_student']} alone", "second"),
                                row(f"{plan['second_student']} distilled", "second_distilled"),
                                row(f"teacher {plan['teacher']} (fine-tuned first)", "teacher")]),
        f"\nSeed: each distilled student beats the same student alone. Here: {gain('student_distilled')} and "
        f"{gain('second_distilled', 'second')} mean Jaccard; the teacher is {gain('teacher')} above the student.\n",
        "## 3. Hard-set fine-tuning of the trained student\n",
    ]
    hard = r["hard_mine"]
    parts += [markdown_table(["model", "mean Jaccard", "top-1"], [
        ["before (the student)", pct(student["mean_jaccard"]), pct(student["top1"])],
        *[[f"{label}, step {i}: {step}", pct(ev(f'{name}_{stage}')["mean_jaccard"]),
           pct(ev(f'{name}_{stage}')["top1"])]
          for label, name in (("hard only", "hard"), ("hard + as many easy", "hard_easy"))
          for i, (stage, step) in enumerate((("frozen", "stem + 2 stages frozen"), ("full", "whole network")), 1)],
    ]), f"\nHard set: {hard['hard']} of {hard['videos']} training videos. Seed: fine-tuning on the hard set gains "
        f"accuracy. Here: {gain('hard_full')} (hard only), {gain('hard_easy_full')} (easy videos mixed back in).\n",
        "## 4. Aggregation heads on pretrained features\n"]
    heads = [("mean (TSN)", "student"), ("NeXtVLAD (own lr: aggregator x "
                                         f"{plan['head_lr_scale']})", "nextvlad"),
             ("NetVLAD", "netvlad"), ("NetFV", "netfv"), ("DBoF", "dbof"), ("LSTM", "lstm"), ("BiGRU", "bigru"),
             ("mean + MoE classifier", "moe")]
    parts += [markdown_table([*header, "parameters"], [row(label, name, str(r[f"train_{name}"]["params"]))
                                                      for label, name in heads]),
              f"\nSeed: NeXtVLAD above mean pooling. Here: {gain('nextvlad')}.\n",
              "## 5. Frame policies and the adaptive model, by keyframe count\n",
              _policy_tables(r)]
    parts += ["## 6. Specialists started from the general model, fused with it\n"]
    fusion, fused = r["fuse"], ev("fused")
    rows = [["general (the student)", pct(student["mean_jaccard"]), pct(student["top1"])]]
    rows += [[f"fused, rule `{rule}`" + (" (kept)" if rule == fusion["rule"] else ""), pct(result["mean_jaccard"]),
              pct(result["top1_hit"])] for rule, result in fusion["rules"].items()]
    parts += [markdown_table(["model", "mean Jaccard", "top-1"], rows), "",
              markdown_table(["group", "videos", "general", "fused"], [
                  [group, str(g["videos"]), pct(g["general"]), pct(g["fused"])]
                  for group, g in fusion["groups"].items()]),
              f"\nSeed: fusion above the general model. Here: {fused['mean_jaccard'] - student['mean_jaccard']:+.3f} "
              "(rule and policy chosen on this validation split, so leaning optimistic).\n",
              "## Time per step\n",
              markdown_table(["step", "seconds"], [[name, f"{seconds:.0f}"] for name, seconds in s.items()]), ""]
    return "\n".join(parts)


_POLICIES = (("keyframes, repeated to 3 (the student)", "student"), ("keyframes + near frames (`fill=near`)",
                                                                     "student_near"),
             ("adaptive: one TSN fed the keyframes there are", "student_adaptive"),
             ("adaptive: separate 1/2/3-frame models", "by_frame_count"))
_BUCKETS = ("1", "2", ">=3")


def _buckets(evaluation: dict) -> dict[str, tuple[int, float | None]]:
    """(videos, mean Jaccard) on videos with 1, 2 and at least 3 keyframes."""
    grouped: dict[str, list[tuple[int, float]]] = {bucket: [] for bucket in _BUCKETS}
    for count, group in evaluation["by_keyframes"].items():
        grouped[count if count in ("1", "2") else ">=3"].append((group["videos"], group["mean_jaccard"]))
    buckets = {}
    for bucket, pairs in grouped.items():
        videos = sum(count for count, _ in pairs)
        buckets[bucket] = (videos, sum(count * jaccard for count, jaccard in pairs) / videos if videos else None)
    return buckets


def _policy_tables(r: dict) -> str:
    """Section 5: every frame policy on the benchmark's validation split and on the `cuts` corpus (keyframes at
    shot cuts only), by keyframe count, with the decode time that buys it."""
    parts = []
    for title, prefix in (("benchmark validation split", "eval_"), ("`cuts` corpus (GOP 300: keyframes at shot "
                                                                       "cuts only)", "eval_cuts_")):
        evaluations = {name: r[prefix + name] for _, name in _POLICIES if prefix + name in r}
        if "student" not in evaluations:
            continue
        videos = {bucket: count for bucket, (count, _) in _buckets(evaluations["student"]).items()}
        rows = [[label, pct(e["mean_jaccard"]), *[pct(jaccard) for _, jaccard in _buckets(e).values()],
                 f"{e['decode_ms']:.1f}", f"{e['decode_ms'] / evaluations['student']['decode_ms']:.2f}x",
                 f"{e['total_ms']:.1f}"]
                for label, name in _POLICIES if (e := evaluations.get(name))]
        parts += [f"On the {title}:\n", markdown_table(
            ["frames", "all", *[f"{b} keyframes ({videos[b]})" for b in _BUCKETS], "decode ms", "decode vs keyframes",
             "total ms/video"], rows), ""]
        near = evaluations.get("student_near")
        if near:
            student = evaluations["student"]
            few = [b for b in ("1", "2") if videos[b]]
            parts.append(f"Near fill against keyframes repeated: {near['mean_jaccard'] - student['mean_jaccard']:+.3f} "
                         "overall" + "".join(f", {_buckets(near)[b][1] - _buckets(student)[b][1]:+.3f} on {b}-keyframe "
                                             "videos" for b in few)
                         + f", decoding {near['decode_ms'] / student['decode_ms']:.2f}x the keyframes-only median "
                         "(the budget: 1.5x).\n")
    parts.append("Seed: the adaptive model keeps the accuracy and saves the time of frames it does not decode. "
                 "Beyond the seed: `fill=near` fills the segments a video's keyframes cannot, with the first frames "
                 "after a keyframe nearest each segment centre (decode capped by `max_decode`).\n")
    return "\n".join(parts)
