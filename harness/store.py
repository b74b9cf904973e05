"""Results store: SQLite at <out>/results.db.

One row per (model, task, method, variant, template, shots, seed, example). A *unit* (one pass of one method
over the eval set, e.g. a template at k shots with one demo seed) is written in one transaction together with a
row in `units`, so an interrupted run never leaves half a unit, and a rerun skips every unit already there.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import HarnessError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY, params INTEGER NOT NULL, info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    model TEXT NOT NULL, task TEXT NOT NULL, info TEXT NOT NULL, PRIMARY KEY (model, task)
);
CREATE TABLE IF NOT EXISTS units (
    model TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL, unit TEXT NOT NULL, info TEXT NOT NULL,
    PRIMARY KEY (model, task, method, unit)
);
CREATE TABLE IF NOT EXISTS records (
    model TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL, variant TEXT NOT NULL,
    template TEXT NOT NULL, shots INTEGER NOT NULL, seed INTEGER NOT NULL, example_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (model, task, method, variant, template, shots, seed, example_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The layout above, as this version writes and reads it. A store from before the version was recorded is 1; a store
# written by a newer harness (a higher version) is refused rather than misread.
SCHEMA_VERSION = 1


@dataclass
class Record:
    """One example scored by one method variant: the language every method speaks.

    `logprobs[i]` is the score of answer choice i (a log-likelihood, or a calibrated/trained log-probability).
    Diagnostics that a method cannot give are None.
    """

    example_id: str
    group: str
    gold: list[int]
    logprobs: list[float]
    n_tokens: list[int] | None = None
    n_chars: list[int] | None = None
    valid_mass: float | None = None  # probability on the first tokens of the valid answers (did it attempt?)
    top1_valid: bool | None = None  # does its unconstrained top-1 next token start a valid answer?
    gold_rank: int | None = None  # full-vocabulary rank of the gold answer's first token (1 = top)
    choice_texts: list[str] | None = None  # kept where a metric reads the answers' text (ReCoRD)
    gold_texts: list[str] | None = None
    generated: str | None = None  # generated-answer tasks: the greedy output, cut at the first newline

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":"))


@dataclass
class UnitKey:
    model: str
    task: str
    method: str
    unit: str  # e.g. "lm-eval/k4/s1"


@dataclass(frozen=True)
class UnitName:
    """A unit's name within its (model, task, method), typed: how it is written into a store and read back.

    `variant` is a prompt unit's kind (gold, random_labels, control, ...) or a trained unit's stored variant;
    `size` is `k<demos>` or `n<train examples>`. Template names are validated where they enter (harness/prompts.py),
    so the text form `variant/template/size/s<seed>` reads back unambiguously."""

    variant: str
    template: str
    size: str
    seed: int

    def __str__(self) -> str:
        return f"{self.variant}/{self.template}/{self.size}/s{self.seed}"

    @classmethod
    def parse(cls, text: str) -> UnitName:
        parts = text.split("/")
        if len(parts) != 4 or parts[2][:1] not in ("k", "n") or not parts[3].startswith("s"):
            raise HarnessError(f"not a unit name: {text!r} (expected variant/template/k<n>|n<n>/s<seed>)")
        return cls(parts[0], parts[1], parts[2], int(parts[3][1:]))

    @property
    def number(self) -> int:
        """Demos (k) or train examples (n)."""
        return int(self.size[1:])


@dataclass
class VariantRecords:
    """Records of one variant produced by a unit."""

    variant: str
    template: str
    shots: int
    seed: int
    records: list[Record] = field(default_factory=list)


class Store:
    def __init__(self, out_dir: str | Path, create: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "results.db"
        if create:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                probe = self.out_dir / ".write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as err:
                raise HarnessError(f"output folder {self.out_dir} cannot be written (--out): {err.strerror}") from None
        elif not self.path.is_file():
            raise HarnessError(f"no results store at {self.path}: run `harness eval --out {self.out_dir}` first")
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            with self.conn:
                self.conn.executescript(SCHEMA)
            version = self.get_meta("schema_version") or 1
        except (sqlite3.DatabaseError, HarnessError) as err:
            raise HarnessError(f"{self.path}: not a usable results store ({err})") from None
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise HarnessError(
                f"{self.path} was written by a newer harness (store schema {version}; this version reads up to "
                f"{SCHEMA_VERSION}): upgrade harness, or use another --out"
            )
        if create and self.get_meta("schema_version") != SCHEMA_VERSION:
            self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.conn.close()

    # ---- metadata ----
    def get_meta(self, key: str) -> object | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return self._json(row[0], f"meta '{key}'") if row else None

    def _json(self, text: str, where: str):
        """A stored JSON payload; a corrupt one is a one-line error naming the store and the row."""
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise HarnessError(
                f"{self.path}: corrupt stored data in {where}; delete that unit's rows or use another --out"
            ) from None

    def set_meta(self, key: str, value: object) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def put_model(self, model: str, params: int, info: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (model, params, json.dumps(info, sort_keys=True))
            )

    def models(self) -> list[tuple[str, int, dict]]:
        rows = self.conn.execute("SELECT model, params, info FROM models ORDER BY params, model").fetchall()
        return [(m, p, self._json(i, f"model {m}")) for m, p, i in rows]

    def put_task(self, model: str, task: str, info: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (model, task, json.dumps(info, sort_keys=True))
            )

    def task_info(self, model: str, task: str) -> dict | None:
        row = self.conn.execute("SELECT info FROM tasks WHERE model=? AND task=?", (model, task)).fetchone()
        return self._json(row[0], f"task {model}/{task}") if row else None

    # ---- units and records ----
    def has_unit(self, key: UnitKey) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM units WHERE model=? AND task=? AND method=? AND unit=?",
            (key.model, key.task, key.method, key.unit),
        ).fetchone()
        return row is not None

    def unit_info(self, key: UnitKey) -> dict | None:
        row = self.conn.execute(
            "SELECT info FROM units WHERE model=? AND task=? AND method=? AND unit=?",
            (key.model, key.task, key.method, key.unit),
        ).fetchone()
        return self._json(row[0], f"unit {key.model}/{key.task}/{key.method}/{key.unit}") if row else None

    def add_unit_info(self, key: UnitKey, extra: dict) -> None:
        """Merge `extra` into a stored unit's info (what a newer version computes for units stored before it)."""
        info = {**(self.unit_info(key) or {}), **extra}
        with self.conn:
            self.conn.execute(
                "UPDATE units SET info=? WHERE model=? AND task=? AND method=? AND unit=?",
                (json.dumps(info, sort_keys=True), key.model, key.task, key.method, key.unit),
            )

    def put_unit(self, key: UnitKey, outputs: list[VariantRecords], info: dict | None = None) -> None:
        """Write a finished unit and all its records atomically."""
        rows = [
            (key.model, key.task, key.method, v.variant, v.template, v.shots, v.seed, r.example_id, r.to_json())
            for v in outputs
            for r in v.records
        ]
        with self.conn:  # one transaction: all or nothing
            self.conn.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?)", rows)
            self.conn.execute(
                "INSERT OR REPLACE INTO units VALUES (?,?,?,?,?)",
                (key.model, key.task, key.method, key.unit, json.dumps(info or {}, sort_keys=True)),
            )

    def records(self, model: str, task: str) -> dict[tuple[str, str, str, int, int], list[Record]]:
        """(method, variant, template, shots, seed) -> records sorted by example id."""
        out: dict[tuple[str, str, str, int, int], list[Record]] = {}
        cursor = self.conn.execute(
            "SELECT method, variant, template, shots, seed, payload FROM records WHERE model=? AND task=? "
            "ORDER BY method, variant, template, shots, seed, example_id",
            (model, task),
        )
        for method, variant, template, shots, seed, payload in cursor:
            where = f"record {model}/{task}/{method}/{variant}/{template}/k{shots}/s{seed}"
            try:
                record = Record(**self._json(payload, where))
            except TypeError:
                raise HarnessError(f"{self.path}: corrupt stored data in {where} (unknown fields)") from None
            out.setdefault((method, variant, template, shots, seed), []).append(record)
        return out

    def unit_infos(self, model: str, task: str) -> dict[tuple[str, str], dict]:
        """(method, unit key) -> the info stored with the unit (trained parameters, curves, chosen layer...)."""
        cursor = self.conn.execute(
            "SELECT method, unit, info FROM units WHERE model=? AND task=? ORDER BY method, unit", (model, task)
        )
        return {(m, u): self._json(i, f"unit {model}/{task}/{m}/{u}") for m, u, i in cursor}

    def tasks(self, model: str) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT task FROM tasks WHERE model=? ORDER BY task", (model,)).fetchall()
        return [r[0] for r in rows]


# ---- what one store may hold: checked by a run that resumes into it and by `harness merge` -----------------------
# Each check compares what the store holds with what would be added (`wanted`); on a mismatch it raises one line,
# the store's path and what differs, then `fix` (what the user can do about it).


def check_same_eval_set(store: Store, wanted: dict, fix: str) -> None:
    """One eval set per store (data, --limit, --limit-seed): results over different examples are never mixed."""
    stored = store.get_meta("eval_set")
    if stored is not None and stored != wanted:
        raise HarnessError(f"{store.path} holds results for another eval set ({stored}); {fix}")


def stored_design(store: Store) -> dict | None:
    """The store's prompt design (a store written before designs existed is full; an empty one has none yet)."""
    return store.get_meta("design") or ({"design": "full"} if store.models() else None)


def check_same_design(store: Store, wanted: dict, fix: str) -> None:
    """One prompt design per store: a template mean over a sampled design and one over the full grid are different
    estimates, never mixed in one table. `fix` may use {share}, the stored design's --template-share flag."""
    stored = stored_design(store)
    if stored is not None and stored != wanted:
        share = f" --template-share {stored['template_share']}" if "template_share" in stored else ""
        raise HarnessError(
            f"{store.path} holds results of another prompt design ({stored['design']}{share}); "
            + fix.replace("{share}", share)
        )


def check_same_presets(store: Store, wanted: dict[str, dict], fix: str) -> None:
    """One preset per trained method per store (the caller records `wanted`'s presets beside the store's own)."""
    stored = store.get_meta("presets") or {}
    for method, preset in wanted.items():
        if method in stored and stored[method] != preset:
            changed = sorted(k for k in preset.keys() | stored[method].keys() if stored[method].get(k) != preset.get(k))
            raise HarnessError(
                f"{store.path} holds {method} results made with another preset ({', '.join(changed)} differ); {fix}"
            )


def check_same_train_source(store: Store, model: str, task: str, wanted: str | None, fix: str) -> None:
    """Demos and training examples come from a task's train source: stored units drawn from another are not added
    to."""
    stored = (store.task_info(model, task) or {}).get("train_source")
    if stored is not None and stored != wanted and store.unit_infos(model, task):
        raise HarnessError(f"{store.path} holds {model} {task} results with demos from {stored}, not {wanted}; {fix}")


def claim_for_command(store: Store, kind: str, wanted: dict, command: str, tasks: list[str], foreign: str) -> None:
    """A store of one command that is not `harness eval` (meta "kind": transfer, w2s): refuse it if it holds another
    command's results (`foreign`: what the error says of them) or results of other settings (meta[kind]), which would
    mix incomparable numbers; else record the kind, `wanted`, `command` (after the earlier ones, not twice in a row)
    and `tasks` (the report lists the latest command's in its order, then those only earlier commands ran)."""
    stored_kind = store.get_meta("kind")
    if stored_kind not in (None, kind) or (stored_kind is None and store.models()):
        raise HarnessError(f"{store.path} {foreign}")
    stored = store.get_meta(kind)
    if stored is not None and stored != wanted:
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise HarnessError(
            f"{store.path} holds {kind} results made with other settings ({', '.join(changed)} differ); use another "
            "--out, or the same flags"
        )
    store.set_meta("kind", kind)
    store.set_meta(kind, wanted)
    earlier = store.get_meta("commands") or []
    store.set_meta("commands", earlier + [command] if earlier[-1:] != [command] else earlier)
    store.set_meta("tasks", list(dict.fromkeys(tasks + (store.get_meta("tasks") or []))))
