"""Reading back what a run wrote, in tests, independently of the writers: TensorBoard event
files (the TFRecord framing, u64 length, u32 length-crc, payload, u32 payload-crc, parsed by
hand, each payload with the protobuf schema), `metrics.jsonl`, and a run's evaluation policy."""

import json
from pathlib import Path

import jax
import numpy as np
from tensorboardX.proto import event_pb2
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

from rollax.logging.run_callbacks import restore
from rollax.rollout.collector import act
from rollax.run.program import make_program
from rollax.run.run_folder import read_experiment


def read_events(log_dir: Path) -> list[event_pb2.Event]:
    """Every event of `log_dir`'s TensorBoard files, in file order."""
    events = []
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def texts(log_dir: Path, tag: str) -> dict[int, str]:
    """`{step: text}` of a text tag."""
    return {event.step: value.tensor.string_val[0].decode()
            for event in read_events(log_dir) for value in event.summary.value
            if value.tag == f"{tag}/text_summary"}


def scalar_events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(log_dir):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hparams_plugin_data(log_dir: Path) -> dict[str, HParamsPluginData]:
    """TensorBoard's HPARAMS records in `log_dir`'s events, by tag."""
    found = {}
    for event in read_events(log_dir):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                found[value.tag] = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    return found


def train_metrics(run: Path, seed: int) -> dict[int, dict[str, float]]:
    """`{step: {train/<name>: value}}` from a seed's metrics.jsonl."""
    rows = {}
    for line in (run / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["step"], {}).update(
            {k: v for k, v in row.items() if k.startswith("train/")})
    return rows


def evaluation_policy_actions(run_dir: Path, seed_index: int, observations: np.ndarray):
    """The greedy actions of the run's evaluation policy: its newest training state restored
    into the program's own structure, the learner's model, the distribution's mode."""
    experiment = read_experiment(run_dir)
    plan, program = make_program(experiment)
    try:
        state, _, _ = restore(run_dir, program.init(experiment.seed_list), [])
    finally:
        program.close()
    seed_state = jax.tree.map(lambda x: x[seed_index], state["train"])
    distribution = act(program.learner.model(seed_state), observations, plan.action_space).distribution
    return np.asarray(distribution.mode())
