"""Write the shipped word-edit data set, `src/rollax/tokens/data/edits.jsonl`.

Each row asks for one reordering of three three-letter words: `rev` (the words backwards),
`rol` (the first word moved to the end), `ror` (the last word moved to the front). The three
give three different answers for every prompt, so the op word always matters (with 2 words,
or with a first-last swap, several edits coincide and a policy that ignores the op scores
high). The 24 words start with 24 different letters, so a word is known by its first
character. Columns: `prompt` ("rol owl fox yak="), `answer` ("fox yak owl"), `op`, `words`
(the answer's word count). Deterministic: the same file for
the same seed. Run `python tools/make_edits_data.py` after changing it; the tests read the
shipped file.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDS = ["ant", "bee", "cat", "dog", "elk", "fox", "gnu", "hen", "ivy", "jay", "koi", "log",
         "mud", "nut", "owl", "pig", "rat", "sun", "tea", "urn", "van", "wax", "yak", "zoo"]
OPS = {
    "rev": lambda words: words[::-1],
    "rol": lambda words: [*words[1:], words[0]],
    "ror": lambda words: [words[-1], *words[:-1]],
}
OUT = Path(__file__).resolve().parent.parent / "src" / "rollax" / "tokens" / "data" / "edits.jsonl"


def rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < count:
        op = rng.choice(sorted(OPS))
        words = rng.sample(WORDS, 3)
        prompt = f"{op} {' '.join(words)}="
        if prompt in seen:
            continue
        seen.add(prompt)
        answer = OPS[op](words)
        out.append({"prompt": prompt, "answer": " ".join(answer), "op": op, "words": len(answer)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as file:
        for row in rows(args.count, args.seed):
            file.write(json.dumps(row) + "\n")
    print(f"wrote {args.count} rows to {args.out}")


if __name__ == "__main__":
    main()
