"""One infill of a document span, from text to cleaned result: plan -> engine -> post-process.

Shared by `dgls infill` and the language server so both give the same answer for the same text.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .engine import Engine, InfillRequest
from .positions import offset_to_position

EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascriptreact", ".ts": "typescript", ".tsx": "typescriptreact", ".go": "go", ".rs": "rust",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".java": "java", ".lua": "lua", ".sh": "shellscript", ".bash": "shellscript", ".rb": "ruby",
    ".cs": "csharp", ".kt": "kotlin", ".swift": "swift", ".php": "php", ".scala": "scala", ".zig": "zig",
    ".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".md": "markdown", ".html": "html",
    ".css": "css",
}


def language_for_path(path: str) -> str:
    """The LSP language id for a file name ("plaintext" when unknown)."""
    return EXTENSIONS.get(Path(path).suffix.lower(), "plaintext")


def infill_text(engine: Engine, text: str, language_id: str, start: int, end: int, *,
                max_tokens: int | None = None, steps: int | None = None, seed: int | None = 0,
                doc_id: str | None = None, cancel: threading.Event | None = None, tree=None,
                expand_to_node: bool = False, rewrite: bool = False, on_draft=None) -> dict:
    """Plan the span at [start, end), infill it, clean it; returns text, range (offsets and LSP) and stats."""
    from .postprocess import choose_infill
    from .spans import plan_span

    plan = plan_span(text, language_id, start, end if end != start else None, tree=tree,
                     expand_to_node=expand_to_node)
    span = text[plan.start:plan.end]
    request = InfillRequest(
        prefix=text[: plan.start], suffix=text[plan.end:], span=span, doc_id=doc_id,
        max_tokens=max_tokens or plan.budget, steps=steps, seed=seed, single_line=plan.single_line,
        seed_with_span=rewrite and bool(span), on_draft=on_draft,
    )
    result = engine.infill(request, cancel=cancel)
    choice = choose_infill([result.text], plan, text, language_id) if result.status == "ok" else None
    final = choice.text if choice is not None else result.text
    return {
        "text": final,
        "raw": result.text,
        "status": result.status,
        "path": choice.path if choice is not None else "cancelled",
        "range": {
            "start": _pos(text, plan.start), "end": _pos(text, plan.end),
            "startOffset": plan.start, "endOffset": plan.end,
        },
        "plan": {"kind": plan.kind, "budget": plan.budget, "single_line": plan.single_line},
        "confidence": result.confidence,
        "stats": result.stats.to_dict(),
    }


def _pos(text: str, offset: int) -> dict:
    line, character = offset_to_position(text, offset)
    return {"line": line, "character": character}
