"""`harness merge OUT SHARD...`: put the stores of a sharded run (`harness eval --shard I/N`, one --out each) into OUT,
after the checks a resumed run makes (one eval set, prompt design, preset per method and train source per task, and
the same store schema); then `harness report OUT` renders it. A unit OUT already holds is kept as it is, so merging
twice, or merging a shard into a store that has its units, changes nothing.

The ranks of one torchrun job use the same code: rank 0 merges the other ranks' private stores (`absorb_ranks`).
Imports no torch.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack, closing
from pathlib import Path

from rich.console import Console

from harness.errors import HarnessError
from harness.lock import writer_lock
from harness.parallel import RANKS_DIR
from harness.store import (
    SCHEMA_VERSION,
    Store,
    UnitName,
    check_same_design,
    check_same_eval_set,
    check_same_presets,
    check_same_train_source,
    stored_design,
)

FIX = "merge only the shards of one command (the same options but --shard and --out)"
TABLES = ("models", "tasks", "units", "records")  # copied whole; a row OUT already has is kept


def merge(out: str | Path, shards: list[str], console: Console) -> None:
    """Merge the shards' stores into OUT's, each in one transaction. Refused before anything is added (HarnessError):
    a shard that a live run holds (it is still being written), and a mix (each shard is checked against OUT and
    against the first shard). A folder named twice is merged once."""
    if not shards:
        raise HarnessError("`harness merge` needs OUT and at least one SHARD folder")
    out = Path(out)
    folders = list({Path(s).resolve(): Path(s) for s in shards}.values())
    for folder in folders:
        if folder.resolve() == out.resolve():
            raise HarnessError(f"cannot merge {out} into itself: give the shards' folders after OUT")
        Store(folder, create=False).close()  # a missing or unusable shard fails before OUT is touched
    with writer_lock(out), ExitStack() as held:
        for folder in folders:
            held.enter_context(writer_lock(folder))
        sources = [held.enter_context(closing(Store(folder, create=False))) for folder in folders]
        store = held.enter_context(closing(Store(out)))
        for source in sources:
            _check_mergeable(store, source)
            _check_mergeable(sources[0], source)
        for folder, source in zip(folders, sources):
            added = merge_store(store, source)
            shard = (source.get_meta("config") or {}).get("shard")
            named = f" (shard {shard['index'] + 1}/{shard['count']})" if isinstance(shard, dict) else ""
            console.print(f"{folder}{named}: {added} units added to {store.path}")


def merge_store(store: Store, source: Store) -> int:
    """Add the units (and their records, models and tasks) of `source` that `store` lacks, after checking the two
    may share a store; returns the number of units added."""
    _check_mergeable(store, source)
    _merge_meta(store, source)
    conn = store.conn
    before = conn.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    conn.execute("ATTACH DATABASE ? AS source", (str(source.path),))
    try:
        with conn:  # one transaction: a shard is merged whole or not at all
            # a task's info comes from the store with its units: OUT's where it has some, else the shard's
            conn.execute(
                "INSERT OR REPLACE INTO main.tasks SELECT * FROM source.tasks AS t WHERE NOT EXISTS "
                "(SELECT 1 FROM main.units AS u WHERE u.model = t.model AND u.task = t.task)"
            )
            for table in TABLES:
                conn.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM source.{table}")
    finally:
        conn.execute("DETACH DATABASE source")
    return conn.execute("SELECT COUNT(*) FROM units").fetchone()[0] - before


def _check_mergeable(store: Store, source: Store) -> None:
    """The checks a resumed run makes, with `source`'s metadata as what would be added."""
    version = source.get_meta("schema_version") or 1
    if version != SCHEMA_VERSION:
        raise HarnessError(
            f"{source.path} was written with store schema {version}, this harness writes {SCHEMA_VERSION}: rerun "
            "that shard with this version"
        )
    if source.get_meta("kind") is not None or store.get_meta("kind") is not None:
        raise HarnessError(f"{source.path} or {store.path} is a `harness transfer` store: merge merges eval stores")
    eval_set = source.get_meta("eval_set")
    if eval_set is not None:
        check_same_eval_set(store, eval_set, f"{source.path} holds {eval_set}: {FIX}")
    design = stored_design(source)
    if design is not None:
        check_same_design(store, design, f"{source.path} holds {design}: {FIX}")
    for model, _, _ in source.models():
        for task in source.tasks(model):
            if not source.unit_infos(model, task):
                continue
            wanted = (source.task_info(model, task) or {}).get("train_source")
            check_same_train_source(store, model, task, wanted, f"{source.path} holds {wanted}: {FIX}")
            _check_same_calibration(store, source, model, task)
    check_same_presets(store, source.get_meta("presets") or {}, f"{source.path} holds another: {FIX}")


def _calibrated_templates(store: Store, model: str, task: str) -> dict[str, bool]:
    """Template -> whether the store's gold prompt units of it carry their calibrated variant."""
    out = {}
    for (method, unit), info in store.unit_infos(model, task).items():
        name = UnitName.parse(unit)
        if method == "prompt" and name.variant == "gold":
            out[name.template] = "calibrated" in info.get("variants", [])
    return out


def _check_same_calibration(store: Store, source: Store, model: str, task: str) -> None:
    """A template's gold units all carry their calibrated twin or none does (as a resumed run checks with
    --variants): otherwise the report's calibrated columns would cover some shots only."""
    ours = _calibrated_templates(store, model, task)
    for template, calibrated in _calibrated_templates(source, model, task).items():
        if ours.get(template, calibrated) != calibrated:
            state = "with" if ours[template] else "without"
            raise HarnessError(
                f"{store.path} holds {model} {task} gold prompts of {template} {state} their calibrated variant, "
                f"{source.path} {'without' if ours[template] else 'with'}: {FIX}"
            )


def _merge_meta(store: Store, source: Store) -> None:
    """The store's metadata after the merge: the eval set and design it now holds, the presets of both, every command
    that produced it, in order, and a config when it had none (without the shard's number)."""
    presets = {**(store.get_meta("presets") or {}), **(source.get_meta("presets") or {})}
    if presets != (store.get_meta("presets") or {}):
        store.set_meta("presets", presets)
    for key in ("eval_set", "design"):
        value = source.get_meta(key)
        if value is not None and store.get_meta(key) is None:
            store.set_meta(key, value)
    ours = store.get_meta("commands") or []
    theirs = source.get_meta("commands") or [c for c in [source.get_meta("command")] if c]
    commands = ours + [c for c in theirs if c not in ours]
    if commands != ours:
        store.set_meta("commands", commands)
        store.set_meta("command", commands[-1])
    config = source.get_meta("config")
    if config is not None and store.get_meta("config") is None:
        store.set_meta("config", {k: v for k, v in config.items() if k != "shard"})


def rank_stores(out: str | Path) -> list[Path]:
    """The private stores of a torchrun job's ranks under OUT (left behind by a killed job, or just finished)."""
    folder = Path(out) / RANKS_DIR
    return sorted(p.parent for p in folder.glob("*/results.db")) if folder.is_dir() else []


def absorb_ranks(store: Store, out: str | Path) -> int:
    """Merge every rank's private store under OUT into `store` (OUT's own), then delete it; returns the units
    added. A rank store a live process still holds is refused (HarnessError naming its pid)."""
    added = 0
    for folder in rank_stores(out):
        with writer_lock(folder):
            source = Store(folder, create=False)
            try:
                added += merge_store(store, source)
            finally:
                source.close()
        shutil.rmtree(folder)
    if (Path(out) / RANKS_DIR).is_dir() and not any((Path(out) / RANKS_DIR).iterdir()):
        (Path(out) / RANKS_DIR).rmdir()
    return added
