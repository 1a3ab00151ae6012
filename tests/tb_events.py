"""Reading TensorBoard event files back in tests, independently of the writer: the TFRecord
framing (u64 length, u32 length-crc, payload, u32 payload-crc) parsed by hand, each payload
with the protobuf schema."""

from pathlib import Path

from tensorboardX.proto import event_pb2


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
