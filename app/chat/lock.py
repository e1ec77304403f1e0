"""The template lock, as the job page shows it: which template version a run trains with, and how
it differs from the base model's own template (what serving would use without the lock)."""

from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy.orm import Session

from app.models import ChatTemplateVersion, Job


def _diff_lines(native: str, pinned: str) -> list[tuple[str, str]]:
    """(css class, line) pairs of a unified diff from the native template to the pinned one."""
    lines = difflib.unified_diff(
        _readable(native), _readable(pinned), "native", "this run", lineterm="", n=1
    )
    classes = {"+": "add", "-": "del", "@": "hunk"}
    return [
        ("head" if line[:3] in ("+++", "---") else classes.get(line[:1], "same"), line)
        for line in lines
    ]


def _readable(source: str) -> list[str]:
    """One-line templates split at their tags, so a diff points at the changed part."""
    return source.replace("%}{", "%}\n{").replace("}}{", "}}\n{").splitlines()


def template_summary(session: Session, job: Job) -> dict[str, Any] | None:
    version = (
        session.get(ChatTemplateVersion, job.chat_template_version_id)
        if job.chat_template_version_id
        else None
    )
    if version is None and job.chat_template is None:
        return None
    native = job.base_model.chat_template
    differs = native is not None and job.chat_template != native
    return {
        "name": version.template.name if version else "the model's template",
        "template_id": version.template_id if version else None,
        "version": version.version if version else None,
        "kind": version.template.kind if version else "native",
        "differs": differs,
        "diff": _diff_lines(native, job.chat_template or "") if differs and native else [],
    }
