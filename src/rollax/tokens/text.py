"""A researcher's own data as a token task: prompts and reference answers from a JSONL or CSV
file, a character vocabulary, a seeded held-out split.

`TextTask.from_jsonl(path, name)` reads the rows; every column besides the prompt is kept and
handed to Python rewards (`rollax.tokens.rewards`). As a `TokenTask`: prompts left-padded to the
data's longest, answers (then EOS) right-padded to the longest answer, `sample` draws training
rows, `demonstrate` looks a prompt's answer up in the table (the warm start learns from it), and
the verifier is exact match to it. `held_out` holds the test rows' prompts, which every
evaluation is judged on.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rollax.tokens.tasks import TokenTask
from rollax.tokens.tokenizer import EOS, PAD, CharTokenizer

MAX_PROMPT_LENGTH = 256  # characters; a longer prompt is an error naming its line
PROBE_ROWS = 4  # training rows each Python reward is tried on when it is attached


@dataclasses.dataclass(frozen=True, eq=False)
class TextRows:
    """The data on the host: per row its prompt, answer and other columns."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    # every column but the prompt's; the answer's as text, also as `answer` when it has
    # another name (the shipped rewards read `answer`)
    columns: dict[str, tuple[Any, ...]]
    train: np.ndarray  # row indices
    test: np.ndarray

    def row_of(self) -> dict[str, int]:
        """Prompt text -> its row."""
        return {prompt: row for row, prompt in enumerate(self.prompts)}


@dataclasses.dataclass(frozen=True)
class TextTask(TokenTask):
    """A `TokenTask` over a data file's rows (see the module docstring)."""

    rows: TextRows | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_jsonl(cls, path: str | Path, name: str, prompt_key: str = "prompt",
                   answer_key: str = "answer", test_fraction: float = 0.1, seed: int = 0,
                   chars: str | None = None, max_prompt_length: int = MAX_PROMPT_LENGTH
                   ) -> TextTask:
        """Rows of a JSON-lines file (one object per line; blank lines skipped)."""
        return _task(_read_jsonl(Path(path)), Path(path), name, prompt_key, answer_key,
                     test_fraction, seed, chars, max_prompt_length)

    @classmethod
    def from_csv(cls, path: str | Path, name: str, prompt_key: str = "prompt",
                 answer_key: str = "answer", test_fraction: float = 0.1, seed: int = 0,
                 chars: str | None = None, max_prompt_length: int = MAX_PROMPT_LENGTH) -> TextTask:
        """Rows of a CSV file with a header line."""
        return _task(_read_csv(Path(path)), Path(path), name, prompt_key, answer_key,
                     test_fraction, seed, chars, max_prompt_length)

    @classmethod
    def from_file(cls, path: str | Path, name: str, **options: Any) -> TextTask:
        """`from_jsonl` or `from_csv` by the file's suffix (.jsonl/.json or .csv)."""
        suffix = Path(path).suffix.lower()
        if suffix in (".jsonl", ".json"):
            return cls.from_jsonl(path, name, **options)
        if suffix == ".csv":
            return cls.from_csv(path, name, **options)
        raise ValueError(f"data file {str(path)!r}: expected a .jsonl or .csv file")

    @property
    def fingerprint(self) -> str:
        """A digest of the rows and the split: what a cached warm start is keyed by."""
        rows = self.rows
        text = json.dumps([rows.prompts, rows.answers, rows.train.tolist(), self.tokenizer.chars])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    out = []
    for number, line in enumerate(_text(path).split("\n"), 1):  # JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not JSON ({err.msg}); a JSONL file has one "
                             "JSON object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object")
        out.append((number, row))
    return out


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    try:
        reader = csv.DictReader(io.StringIO(_text(path), newline=""), strict=True)
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        raise ValueError(f"{path}, line {reader.line_num}: not CSV ({err})") from None
    for number, row in rows:
        if None in row or None in row.values():  # more or fewer fields than the header
            fields = sum(v is not None for k, v in row.items() if k is not None)
            raise ValueError(f"{path}, line {number}: {fields + len(row.get(None) or [])} fields "
                             f"where the header has {len(reader.fieldnames)}")
    return rows


def _text(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark
    except UnicodeDecodeError:
        raise ValueError(f"data file {str(path)!r} is not UTF-8 text") from None


def _task(rows: list[tuple[int, dict]], path: Path, name: str, prompt_key: str,
          answer_key: str, test_fraction: float, seed: int, chars: str | None,
          max_prompt_length: int) -> TextTask:
    if not isinstance(name, str) or not name.isidentifier() or not name.islower():
        raise ValueError(f"task name {name!r} must be a lowercase identifier (it becomes "
                         "rollax/Tokens-<Name>-v0)")
    if not rows:
        raise ValueError(f"data file {str(path)!r} holds no rows")
    if isinstance(test_fraction, bool) or not (isinstance(test_fraction, float | int)
                                               and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1)")
    for key, value in (("seed", seed), ("max_prompt_length", max_prompt_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key}={value!r} must be an integer >= 0")
    if chars is not None and not isinstance(chars, str):
        raise ValueError(f"chars={chars!r} must be a string of the vocabulary's characters")
    for key, value in (("prompt_key", prompt_key), ("answer_key", answer_key)):
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r} must be a column name")
    prompts, answers, lines = [], [], []
    for number, row in rows:
        for key in (prompt_key, answer_key):
            if key not in row:
                raise ValueError(f"{path}, line {number}: no column {key!r} (columns: "
                                 f"{sorted(row)})")
        prompt, answer = _string(row[prompt_key]), _string(row[answer_key])
        if not prompt:
            raise ValueError(f"{path}, line {number}: the prompt ({prompt_key!r}) is empty")
        if len(prompt) > max_prompt_length:
            raise ValueError(f"{path}, line {number}: the prompt has {len(prompt)} characters, "
                             f"more than max_prompt_length={max_prompt_length}")
        prompts.append(prompt)
        answers.append(answer)
        lines.append(number)
    _check_duplicates(path, prompts, answers, lines)
    tokenizer = CharTokenizer(chars if chars is not None else
                              "".join(sorted(set("".join(prompts + answers)))))
    for prompt, answer, number in zip(prompts, answers, lines, strict=True):
        try:
            tokenizer.encode(prompt + answer)
        except ValueError as err:
            raise ValueError(f"{path}, line {number}: {err}") from None
    order = np.random.default_rng(seed).permutation(len(prompts))
    count = round(test_fraction * len(prompts))
    if not 0 < count < len(prompts):
        raise ValueError(f"test_fraction={test_fraction} of {len(prompts)} rows leaves an empty "
                         "training or test split")
    columns = {key: tuple(row.get(key) for _, row in rows)
               for key in dict.fromkeys(k for _, row in rows for k in row) if key != prompt_key}
    columns[answer_key] = tuple(answers)  # as the model writes it: text
    columns.setdefault("answer", tuple(answers))
    text_rows = TextRows(tuple(prompts), tuple(answers), columns, np.sort(order[count:]),
                         np.sort(order[:count]))
    return _as_task(name, tokenizer, text_rows)


def _string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _check_duplicates(path: Path, prompts: list[str], answers: list[str], lines: list[int]):
    first: dict[str, int] = {}
    for row, prompt in enumerate(prompts):
        if prompt in first and answers[first[prompt]] != answers[row]:
            raise ValueError(f"{path}, lines {lines[first[prompt]]} and {lines[row]}: the prompt "
                             f"{prompt!r} has two answers; the exact-match verifier needs one")
        first.setdefault(prompt, row)


def _as_task(name: str, tokenizer: CharTokenizer, rows: TextRows) -> TextTask:
    prompt_length = max(map(len, rows.prompts))
    completion_length = max(map(len, rows.answers)) + 1  # and EOS
    prompt_table = np.full((len(rows.prompts), prompt_length), PAD, np.int32)
    answer_table = np.full((len(rows.prompts), completion_length), PAD, np.int32)
    for row, (prompt, answer) in enumerate(zip(rows.prompts, rows.answers, strict=True)):
        ids = tokenizer.encode(prompt)
        prompt_table[row, prompt_length - len(ids):] = ids
        answer_table[row, :len(answer) + 1] = [*tokenizer.encode(answer), EOS]
    train_prompts = jnp.asarray(prompt_table[rows.train])
    prompt_table, answer_table = jnp.asarray(prompt_table), jnp.asarray(answer_table)

    def sample(key):
        return train_prompts[jax.random.randint(key, (), 0, train_prompts.shape[0])]

    def demonstrate(prompt):  # the answer of the first row with this prompt
        return answer_table[jnp.argmax(jnp.all(prompt_table == prompt, axis=1))]

    return TextTask(name, tokenizer, prompt_length, completion_length, sample, demonstrate,
                    held_out=np.asarray(prompt_table[rows.test]), rows=rows)


def with_rewards(task: TextTask, reward_funcs: Any, reward_weights: Any) -> TextTask:
    """`task` trained with Python rewards (`rollax.tokens.rewards`), each run once now on a few
    training rows' answers, so that a broken one fails before anything compiles."""
    from rollax.tokens.rewards import PythonRewards

    if reward_funcs is None:
        if reward_weights is not None:
            raise ValueError(f"reward_weights={reward_weights!r} without reward_funcs")
        return task
    rewards = PythonRewards.build(task, reward_funcs, reward_weights)
    rows = task.rows.train[:PROBE_ROWS]
    prompts = np.stack([task.encode_prompt(task.rows.prompts[row]) for row in rows])
    answers = np.asarray(jax.vmap(task.demonstrate)(jnp.asarray(prompts)))
    rewards.host_values(prompts, answers)
    if rewards.failure:
        raise ValueError(rewards.failure)
    return dataclasses.replace(task, rewards=rewards)
