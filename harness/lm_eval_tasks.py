"""lm-evaluation-harness task YAMLs, read as they are: a folder of them given to --tasks-dir runs unchanged."""

from __future__ import annotations

LM_EVAL_KEYS = ("output_type", "dataset_path", "doc_to_text", "include")


def is_lm_eval_task(doc: dict) -> bool:
    """An lm-eval task file (or a file others include), told apart from a harness task file by its keys."""
    return any(key in doc for key in LM_EVAL_KEYS) and "templates" not in doc
