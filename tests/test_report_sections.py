"""report.md is its sections rendered in order: a new section is one function and one entry in a list (SECTIONS
for the whole report, MODEL_SECTIONS for each model's part, report_transfer.SECTIONS for a transfer report), and
the others render as before around it."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import report
from harness.report import MODEL_SECTIONS, SECTIONS, ModelContext, ReportContext, render
from tests.test_decompose import MODEL, _store


def _render(tmp_path) -> str:
    return render(tmp_path).read_text(encoding="utf-8")


def test_a_section_is_one_entry_in_the_list(tmp_path, monkeypatch):
    _store(tmp_path).close()
    before = _render(tmp_path)

    def models_note(ctx: ReportContext) -> list[str]:
        return ["## A note", "", f"{len(ctx.models)} model(s), {len(ctx.scored_tasks)} task(s).", ""]

    at = SECTIONS.index(report.legend) + 1
    monkeypatch.setattr(report, "SECTIONS", [*SECTIONS[:at], models_note, *SECTIONS[at:]])
    after = _render(tmp_path)
    legend = "\n".join(report.legend(None)) + "\n"  # the legend reads nothing from the store
    assert legend in before
    assert after == before.replace(legend, legend + "## A note\n\n1 model(s), 2 task(s).\n\n", 1)


def test_a_model_section_renders_once_per_model_after_its_heading(tmp_path, monkeypatch):
    _store(tmp_path).close()
    before = _render(tmp_path)

    def prompted_tasks(m: ModelContext) -> list[str]:
        return [f"Prompted: {', '.join(r.task for r in m.prompted)}.", ""]

    monkeypatch.setattr(report, "MODEL_SECTIONS", [MODEL_SECTIONS[0], prompted_tasks, *MODEL_SECTIONS[1:]])
    after = _render(tmp_path)
    start = before.index(f"## {MODEL}\n\n")
    end = before.index("\n\n", start + len(f"## {MODEL}\n\n")) + 2  # the heading, then the parameters line
    assert before[start:end].endswith(" parameters; hand-made; device cpu, float32.\n\n")
    assert after == before[:end] + "Prompted: rte, wic.\n\n" + before[end:]


def test_the_sections_alone_are_the_report(tmp_path, monkeypatch):
    _store(tmp_path).close()
    monkeypatch.setattr(report, "SECTIONS", [report.title, report.legend, report.title])
    legend = "\n".join(report.legend(None))
    assert _render(tmp_path) == f"# harness report\n\n{legend}\n# harness report\n"


def test_a_transfer_report_is_its_sections_in_order(tmp_path, monkeypatch):
    from harness import report_transfer

    committed = Path(__file__).resolve().parent.parent / "reports" / "transfer-smollm2-target-lr1e-4"
    for name in ("results.db", "about.md"):
        shutil.copy(committed / name, tmp_path / name)
    before = report_transfer.render(tmp_path).read_text(encoding="utf-8")
    assert before == (committed / "report.md").read_text(encoding="utf-8")

    def models(ctx: report_transfer.TransferContext) -> list[str]:
        return [f"Models: {', '.join(m for m, _, _ in ctx.models)}.", ""]

    monkeypatch.setattr(report_transfer, "SECTIONS", [models, *report_transfer.SECTIONS])
    after = report_transfer.render(tmp_path).read_text(encoding="utf-8")
    assert after == "Models: smollm2-135m.\n\n" + before
