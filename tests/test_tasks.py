"""Loaders on the real SuperGLUE files: counts, labels, lm-eval's derived fields, subsets, bad files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness.catalog import get_task
from harness.errors import HarnessError
from harness.loaders import DataSource, load_jsonl_split, load_train, resolve_train_source
from harness.tasks import stratified_subset

VAL_SIZES = {"boolq": 3270, "cb": 56, "copa": 100, "rte": 277, "wic": 638, "wsc": 104, "multirc": 4848}


@pytest.mark.parametrize("task", sorted(VAL_SIZES))
def test_val_sizes_and_labels(superglue_dir, task):
    examples = DataSource(superglue_dir).load(get_task(task), "val")
    assert len(examples) == VAL_SIZES[task]
    labels = Counter(e.label for e in examples)
    assert set(labels) <= set(range(len(get_task(task).labels)))
    assert len({e.id for e in examples}) == len(examples)


def test_label_ids_follow_the_hub(superglue_dir):
    rte = DataSource(superglue_dir).load(get_task("rte"), "val")
    assert Counter(e.label for e in rte) == {0: 146, 1: 131}  # 146 entailment
    cb = DataSource(superglue_dir).load(get_task("cb"), "val")
    assert Counter(e.label for e in cb) == {1: 28, 2: 5, 0: 23}  # contradiction, neutral, entailment


def test_multirc_groups_are_questions(superglue_dir):
    examples = DataSource(superglue_dir).load(get_task("multirc"), "val")
    assert len({e.group for e in examples}) == 953
    first = examples[0]
    assert set(first.fields) == {"paragraph", "question", "answer"}


def test_derived_fields_equal_lm_evals(superglue_dir, fewglue_dir, monkeypatch):
    import sys
    import types

    # lm-eval's ReCoRD helper imports a module that transformers 5 removed; doc_to_text does not use it
    for name in ("transformers.data", "transformers.data.metrics", "transformers.data.metrics.squad_metrics"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    from lm_eval.tasks.super_glue.copa import utils as copa_utils
    from lm_eval.tasks.super_glue.record import util as record_util
    from lm_eval.tasks.super_glue.wsc import preprocess_wsc

    data = DataSource(superglue_dir)
    for ex in data.load(get_task("copa"), "val")[:20]:
        f = ex.fields
        assert f"{f['premise_trimmed']} {f['connector']}" == copa_utils.doc_to_text(f)
        assert [" " + f["choice1_lc"], " " + f["choice2_lc"]] == copa_utils.doc_to_choice(f)
    for ex in data.load(get_task("wsc"), "val")[:30]:
        expected = preprocess_wsc.default_doc_to_text(ex.fields)
        assert expected.startswith(f"Passage: {ex.fields['marked_text']}\n")
    record = load_jsonl_split(get_task("record"), fewglue_dir / "ReCoRD" / "train.jsonl")
    for ex in record[:10]:
        assert ex.fields["passage_lm_eval"] == record_util.doc_to_text(ex.fields)
        assert ex.fields["entities"] == sorted(set(ex.fields["entities"]))
        assert set(ex.fields["answers"]) <= set(ex.fields["entities"])


def test_stratified_subset_is_seeded_and_keeps_the_label_mix(superglue_dir):
    examples = DataSource(superglue_dir).load(get_task("boolq"), "val")
    a = stratified_subset(examples, 50, seed=0)
    assert [e.id for e in a] == [e.id for e in stratified_subset(examples, 50, seed=0)]
    assert [e.id for e in a] != [e.id for e in stratified_subset(examples, 50, seed=1)]
    counts = Counter(e.label for e in a)
    assert len(a) == 50 and counts == {1: 31, 0: 19}  # 2033:1237 of 3270, largest remainders


def test_subset_of_multirc_keeps_whole_questions(superglue_dir):
    examples = DataSource(superglue_dir).load(get_task("multirc"), "val")
    subset = stratified_subset(examples, 12, seed=0)
    groups = {e.group for e in subset}
    assert len(groups) == 12
    full = Counter(e.group for e in examples)
    assert Counter(e.group for e in subset) == {g: full[g] for g in groups}


def test_train_source_auto_prefers_fewglue(superglue_dir):
    data = DataSource(superglue_dir)
    source = resolve_train_source("auto", data)
    assert source.kind == "fewglue"
    assert source.for_task(get_task("rte"), data) is source


def test_train_source_auto_skips_fewglue_with_one_label(superglue_dir):
    """FewGLUE's WSC train holds positive examples only: auto takes SuperGLUE's train split, and says why."""
    data = DataSource(superglue_dir)
    wsc = get_task("wsc")
    source = resolve_train_source("auto", data).for_task(wsc, data)
    assert source.kind == "superglue"
    assert source.describe(wsc).startswith("SuperGLUE train split; FewGLUE's ")
    assert source.describe(wsc).endswith("WSC/train.jsonl holds one label only")
    assert len({e.label for e in load_train(wsc, source, data)}) == 2
    # asked for by name, FewGLUE is kept
    assert resolve_train_source("fewglue", data).for_task(wsc, data).kind == "fewglue"


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "RTE" / "val.jsonl"
    path.parent.mkdir()
    good = json.dumps({"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0})
    path.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(HarnessError, match=r"val\.jsonl:3: malformed JSON"):
        DataSource(tmp_path).load(get_task("rte"), "val")


def test_missing_field_names_line(tmp_path):
    path = tmp_path / "RTE" / "val.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"}) + "\n")
    with pytest.raises(HarnessError, match=r"val\.jsonl:1: .*'maybe'"):
        DataSource(tmp_path).load(get_task("rte"), "val")


def test_missing_folder_and_split(tmp_path):
    with pytest.raises(HarnessError, match="data folder not found"):
        DataSource.from_option(str(tmp_path / "nope"))
    with pytest.raises(HarnessError, match="no val split"):
        DataSource(tmp_path).load(get_task("cb"), "val")


def test_unknown_task():
    with pytest.raises(HarnessError, match="unknown task 'rtee'"):
        get_task("rtee")


def test_a_store_refuses_to_resume_a_task_from_another_train_source(tmp_path):
    """Stored demos came from one train source: resuming with another would mix two demo pools in one table."""
    from types import SimpleNamespace

    from harness.evaluate import _check_same_train_source
    from harness.store import Record, Store, UnitKey, VariantRecords

    store = Store(tmp_path)
    store.put_task("m", "wsc", {"train_source": "FewGLUE 32-example train (x)"})
    plan = SimpleNamespace(spec=get_task("wsc"), info={"train_source": "SuperGLUE train split"})
    _check_same_train_source(store, "m", plan)  # no units stored yet: the task info is simply replaced
    record = Record("0", "0", [0], [-1.0, -2.0], n_chars=[1, 1], valid_mass=1.0, top1_valid=True)
    store.put_unit(UnitKey("m", "wsc", "prompt", "gold/a/k0/s0"), [VariantRecords("gold", "a", 0, 0, [record])])
    with pytest.raises(HarnessError, match="holds m wsc results with demos from FewGLUE 32-example train"):
        _check_same_train_source(store, "m", plan)
    _check_same_train_source(
        store, "m", SimpleNamespace(spec=get_task("wsc"), info={"train_source": "FewGLUE 32-example train (x)"})
    )
    store.close()
