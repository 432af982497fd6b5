"""PyTorch settings for the CPU student's model stage: eager (shortvid's torch backend) against
`channels_last`, `torch.compile` and `inference_mode`, with ONNX Runtime (the default backend) as
the reference, in one run.

Baseline: eager with `inference_mode` (shortvid's torch backend). Prints the machine, torch's version
and threads, then a Markdown table: per variant, median and p95 ms per call, the ratio to the
baseline, and the largest difference of its output from eager.

The graph is the `mobilenet_cpu` student (`tsn_mobilenetv3`, 160 px, 63 classes, random weights:
timing only); one video `[1, 3, 3, 160, 160]` per call, the serving path's batch. Rounds go over the
variants in a new shuffled order each time; each variant runs `--runs` calls per round after a
warm-up (compilation happens in the warm-up, before any timing).

    python bench/torch_options.py [--rounds 8] [--runs 20] [--no-compile] [--json out.json]
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shortvid.export import INPUT_NAME, export_model
from shortvid.machine import describe
from shortvid.models import create_model

from common import make_parser, p95, write_json

SIZE, FRAMES, CLASSES = 160, 3, 63


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (needs a C++ compiler)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("tsn_mobilenetv3", num_classes=CLASSES, pretrained=False).eval()
    frames = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    last = create_model("tsn_mobilenetv3", num_classes=CLASSES, pretrained=False).eval()
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last)

    def eager(x):
        with torch.no_grad():
            return model(x)

    def inference(x):
        with torch.inference_mode():
            return model(x)

    def channels_last(x):
        with torch.inference_mode():
            return last(x)

    variants = {"eager, no_grad": eager, "eager, inference_mode (shortvid's torch backend)": inference,
                "channels_last weights, inference_mode": channels_last}
    if not args.no_compile:
        compiled = torch.compile(model)

        def compiled_call(x):
            with torch.inference_mode():
                return compiled(x)

        variants["torch.compile (inductor), inference_mode"] = compiled_call
    from shortvid.infer.backends import OnnxBackend

    folder = tempfile.mkdtemp(prefix="torch-options-")
    session = OnnxBackend(export_model(model, Path(folder) / "student.onnx", SIZE), torch.device("cpu")).session
    array = frames.numpy()
    variants["ONNX Runtime (shortvid's default backend)"] = (
        lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: array})[0]))

    reference = eager(frames)
    differences = {}
    for name, call in variants.items():
        for _ in range(3):  # warm-up (and compilation)
            out = call(frames)
        differences[name] = float((out - reference).abs().max())
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_ in range(args.rounds):
        random.Random(round_).shuffle(order)
        for name in order:
            for _ in range(args.runs):
                started = time.perf_counter()
                variants[name](frames)
                times[name].append((time.perf_counter() - started) * 1000)
    base = statistics.median(times["eager, inference_mode (shortvid's torch backend)"])
    rows = {name: {"median_ms": statistics.median(v), "p95_ms": p95(v),
                   "x_eager": statistics.median(v) / base, "max_abs_difference": differences[name]}
            for name, v in times.items()}
    print(f"machine: {describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | median ms | p95 ms | × eager (inference_mode) | max abs diff vs eager |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} | {row['x_eager']:.2f} | "
              f"{row['max_abs_difference']:.1e} |")
    write_json(args.json, {"machine": describe(), "rows": rows})


if __name__ == "__main__":
    main()
