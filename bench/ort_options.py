"""ONNX Runtime session options for the CPU student: what each setting does to one video's model time.

Baseline: ORT's defaults (errors-only logging), shortvid's session for callers that classify one video
at a time (`OnnxBackend(spin=True)`), in the same run. Prints the results as JSON, then a Markdown
table: per session, the median ms for one video, its ratio to the defaults, and the largest
difference of its output from theirs.

The graph is `tsn_mobilenetv3` (the `mobilenet_cpu` config's student: MobileNetV3 TSN, 160 px, 63
classes) exported by `shortvid.export.export_model`; its weights are random, which changes no
timing. One video is 3 frames, `[1, 3, 3, 160, 160]`, the serving path's batch. Every variant is a
session built with one setting changed from the defaults; `allow_spinning=0` is shortvid's default
session (the service, `classify_many`), and the `I/O binding` row runs the defaults' session through
`run_with_iobinding` with the input bound once. Rounds go over the variants in a new shuffled order
each time, so machine noise hits them alike; within a round each variant's session is made, warmed
up, timed `--runs` times and dropped, one session alive at a time.

    python bench/ort_options.py [--rounds 10] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from shortvid.export import INPUT_NAME, OUTPUT_NAME, export_model
from shortvid.machine import describe
from shortvid.models import create_model

from common import make_parser, write_json

SIZE, FRAMES = 160, 3
IO_BINDING = "I/O binding (input bound once, output to the CPU)"


def variants() -> dict[str, ort.SessionOptions]:
    """shortvid's session and one change each."""
    def options(**changes) -> ort.SessionOptions:
        made = ort.SessionOptions()
        made.log_severity_level = 3
        spin = changes.pop("spin", None)
        if spin is not None:
            made.add_session_config_entry("session.intra_op.allow_spinning", spin)
        for name, value in changes.items():
            setattr(made, name, value)
        return made

    level = ort.GraphOptimizationLevel
    return {
        "ORT defaults (shortvid's session with spin=True)": options(),
        "intra_op_num_threads=1": options(intra_op_num_threads=1),
        "intra_op_num_threads=2": options(intra_op_num_threads=2),
        "graph optimisation: basic": options(graph_optimization_level=level.ORT_ENABLE_BASIC),
        "graph optimisation: extended": options(graph_optimization_level=level.ORT_ENABLE_EXTENDED),
        "execution mode: parallel": options(execution_mode=ort.ExecutionMode.ORT_PARALLEL),
        "memory arena off": options(enable_cpu_mem_arena=False),
        "memory pattern off": options(enable_mem_pattern=False),
        "threads sleep: allow_spinning=0 (shortvid's default session)": options(spin="0"),
        IO_BINDING: options(),
    }


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("--rounds", type=int, default=10, help="rounds over all variants, shuffled each time")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per variant per round")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("tsn_mobilenetv3", num_classes=63, pretrained=False)
    frames = np.random.default_rng(0).standard_normal((1, FRAMES, 3, SIZE, SIZE)).astype(np.float32)
    made = variants()
    times: dict[str, list[float]] = {name: [] for name in made}
    differences: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = str(export_model(model, Path(folder) / "student.onnx", SIZE))

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(path, sess_options=made[name], providers=["CPUExecutionProvider"])

        reference = session("ORT defaults (shortvid's session with spin=True)").run(None, {INPUT_NAME: frames})[0]
        order, shuffle = list(made), random.Random(0).shuffle
        for _ in range(args.rounds):
            shuffle(order)
            for name in order:
                # One session alive at a time: ORT's pool threads spin after each run, and a second
                # session's spinning threads would take the cores from the one being timed.
                current = session(name)
                if name == IO_BINDING:
                    binding = current.io_binding()
                    binding.bind_cpu_input(INPUT_NAME, frames)
                    binding.bind_output(OUTPUT_NAME)

                    def call(current=current, binding=binding) -> np.ndarray:
                        current.run_with_iobinding(binding)
                        return binding.copy_outputs_to_cpu()[0]
                else:
                    def call(current=current) -> np.ndarray:
                        return current.run(None, {INPUT_NAME: frames})[0]
                for _ in range(5):
                    output = call()
                differences[name] = float(np.abs(output - reference).max())
                for _ in range(args.runs):
                    started = time.perf_counter()
                    call()
                    times[name].append((time.perf_counter() - started) * 1000)
                del current
    base = statistics.median(times["ORT defaults (shortvid's session with spin=True)"])
    machine = describe()
    results = {"machine": f"{machine['cpu']}, {machine['cores']} cores", "onnxruntime": ort.__version__,
               "input": [1, FRAMES, 3, SIZE, SIZE], "rounds": args.rounds, "runs": args.runs,
               "median_ms": {name: round(statistics.median(values), 3) for name, values in times.items()},
               "x_defaults": {name: round(statistics.median(values) / base, 3) for name, values in times.items()},
               "max_abs_diff": differences}
    print(json.dumps(results, indent=2))
    print("\n| session | median ms (one video) | × ORT defaults | max abs diff |\n| --- | --- | --- | --- |")
    for name in made:
        print(f"| {name} | {results['median_ms'][name]:.2f} | {results['x_defaults'][name]:.2f} | "
              f"{differences[name]:.1e} |")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
