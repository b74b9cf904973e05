"""The presidents knowledge probe: read what a model knows off its full next-token distribution.

The ordered list of US presidents ("Name, start - end", one per line) is fed once. At each line start the
distribution over the whole vocabulary is read for the first token of the correct name: its probability and its
rank. Line 1 is read with no list before it (0-shot); line n sees the n - 1 lines before it ((n-1)-shot).
Each line is one record, so the store, bootstrap and reports treat it as any other task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from harness.engine import causal_pairs
from harness.errors import HarnessError
from harness.resources import read_text
from harness.store import Record
from harness.tasks import Example, find_beside_data

FOLDER = "presidents"
FILE = "presidents.json"
HINT = "a presidents/presidents.json in or beside the data folder, or $HARNESS_PRESIDENTS_FILE"


def presidents_file(data_folder: Path | None) -> Path | None:
    """$HARNESS_PRESIDENTS_FILE, or presidents/presidents.json in or beside the data folder."""
    return find_beside_data(data_folder, f"{FOLDER}/{FILE}", "HARNESS_PRESIDENTS_FILE", "presidents list")


def load_presidents(path: Path) -> list[Example]:
    """One example per term, in order: fields `name` and `line` ("Name, 1789 - 1797"; "present" when in office)."""
    try:
        rows = json.loads(read_text(path))
        rows = sorted(rows, key=lambda r: int(r["number"]))
        examples = []
        for r in rows:
            start = str(r["took_office"])[:4]
            end = str(r["left_office"])[:4] if r.get("left_office") else "present"
            name = str(r["president"])
            n = int(r["number"])
            examples.append(Example(f"{n:02d}", {"name": name, "line": f"{name}, {start} - {end}"}, 0, f"{n:02d}"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise HarnessError(
            f"{path}: expected a JSON list of {{number, president, took_office, left_office}} ({err})"
        ) from None
    if not examples:
        raise HarnessError(f"{path}: the list is empty")
    return examples


@torch.no_grad()
def read_list(engine, examples: list[Example]) -> list[Record]:
    """One pass over the whole list; per line, log P and full-vocabulary rank of the name's first token."""
    text = "".join(ex.fields["line"] + "\n" for ex in examples)
    encoded = engine.tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    if not ids or ids[0] != engine.prefix_token_id:  # line 1 is read after BOS alone, as an empty context
        ids, offsets = [engine.prefix_token_id] + ids, [(0, 0)] + offsets
    starts, position = [], 0
    for ex in examples:
        starts.append(position)
        position += len(ex.fields["line"]) + 1
    # The token of a line's first character: the first real token that ends after the line start.
    token_of = [next(t for t, (a, b) in enumerate(offsets) if b > s and b > a) for s in starts]
    hidden = engine.decoder(input_ids=torch.tensor([ids], device=engine.device)).last_hidden_state[0]
    engine._count(len(ids), len(ids), causal_pairs(0, len(ids)), len(token_of))
    logp = engine._log_probs(hidden[[t - 1 for t in token_of]])
    records = []
    for ex, t, row in zip(examples, token_of, logp):
        gold = ids[t]
        lp = row[gold].item()
        rank = int((row > row[gold]).sum().item()) + 1
        records.append(
            Record(
                example_id=ex.id,
                group=ex.group,
                gold=[0],
                logprobs=[lp],
                valid_mass=math.exp(lp),
                top1_valid=rank == 1,
                gold_rank=rank,
                choice_texts=[engine.tokenizer.decode([gold])],
                gold_texts=[ex.fields["name"]],  # the report's axis names the presidents
            )
        )
    return records
