"""Layout B's prompt: the code around the span as one chat turn asking for exactly the missing middle.

Instruction-tuned checkpoints (the 26B release) expect their chat format, and a vLLM server
rejects `suffix`, so both the local engine (layout B) and the remote engine build the same
messages here; the model's own chat template turns them into tokens.
"""

from __future__ import annotations

HOLE = "<|missing|>"

INSTRUCTION = (
    "Below is a {language} file with one gap marked {hole}. Reply with exactly the code that "
    "belongs in the gap, so that the file reads correctly with it in place: no explanation, no "
    "Markdown fence, and nothing that is already before or after the gap.{line_rule}"
)
SINGLE_LINE_RULE = " The gap is the rest of one line: reply with a single line."
REPLACING = "\n\nThe gap now holds the code below; reply with the code that should replace it:\n{span}"


def trim_context(prefix: str, suffix: str, max_chars: int) -> tuple[str, str]:
    """Keep the code nearest the span on both sides, cut at whole lines, within `max_chars` in all.

    The prefix gets up to two thirds of the room (the code before a gap says more about it);
    whatever one side does not need goes to the other.
    """
    if len(prefix) + len(suffix) <= max_chars:
        return prefix, suffix
    want_suffix = min(len(suffix), max(max_chars // 3, max_chars - len(prefix)))
    want_prefix = max_chars - want_suffix
    if len(prefix) > want_prefix:
        cut = len(prefix) - want_prefix
        newline = prefix.find("\n", cut - 1) if cut > 0 else -1
        prefix = prefix[newline + 1:] if newline != -1 else prefix[cut:]
    if len(suffix) > want_suffix:
        newline = suffix.rfind("\n", 0, want_suffix)
        suffix = suffix[:newline + 1] if newline > 0 else suffix[:want_suffix]
    return prefix, suffix


def infill_messages(prefix: str, suffix: str, language: str = "source code",
                    single_line: bool = False, replacing: str = "") -> list[dict[str, str]]:
    """The chat messages for one infill: the instruction, then the file with the gap marked.

    `replacing`: the text a rewrite replaces, shown after the file (the gap's current content).
    """
    rule = SINGLE_LINE_RULE if single_line else ""
    text = INSTRUCTION.format(language=language or "source code", hole=HOLE, line_rule=rule)
    content = f"{text}\n\n{prefix}{HOLE}{suffix}"
    if replacing:
        content += REPLACING.format(span=replacing)
    return [{"role": "user", "content": content}]
