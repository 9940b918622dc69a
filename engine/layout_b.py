"""Layout B: the infill as a chat turn, for instruction-tuned checkpoints such as the 26B release.

    encoder:  the model's chat template applied to `infill_messages(prefix, suffix)` with the
              generation prompt (the code before and after the gap, marked, and a short instruction)
    canvas:   [answer slot] * budget, all free; the answer may end with end-of-sequence / end of turn,
              and whatever follows that is dropped

The answer is cut at the first stop token, unwrapped from a Markdown fence if the model added
one, and trimmed where it starts repeating the code after the gap. Long files are cut by tokens,
keeping the code nearest the gap on both sides (`infill_prompt.trim_context`, whole lines).
Repairs (`remask`) keep layout A: their clamped tokens sit in a canvas beside the suffix.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from .canvas import CanvasLayout, split_anchor
from .denoise import CanvasSpec, DenoiseSettings, SamplerRules
from .infill_prompt import infill_messages, trim_context
from .types import EngineError, InfillRequest, InfillResult, InfillStats

LAYOUTS = ("auto", "A", "B")
PRETRIM_CHARS_PER_TOKEN = 12  # code longer than this many chars per token of room is pre-cut by characters
MAX_FIT_ROUNDS = 8
MIN_OVERLAP_CHARS = 6  # a repeated head of the suffix shorter than this is left alone ("):", "}")
MIN_LINE_MATCH_CHARS = 8  # a repeated suffix line counts only with this many non-blank characters
_FENCE = re.compile(r"^\s*```[\w+.-]*[ \t]*\n(.*?)\n?```\s*$", re.S)
_IT_NAME = re.compile(r"(^|[-_.])(it|instruct|chat)($|[-_.])")


# ----- which layout -------------------------------------------------------------------------


def is_instruction_tuned(name: str, config) -> bool:
    """Whether a checkpoint's name (the id or directory given, or the config's) says "-it"."""
    names = []
    for candidate in (str(name or ""), str(getattr(config, "_name_or_path", "") or "")):
        path = Path(candidate.rstrip("/"))
        # a hub snapshot directory (.../models--org--name/snapshots/<rev>) is named by its repository
        names.append(path.parent.parent.name if path.parent.name == "snapshots" else path.name)
    return any(_IT_NAME.search(n.lower()) for n in names if n)


def checkpoint_layout(config, tokenizer, name: str) -> str:
    """The layout a checkpoint asks for: its config's `infill_layout`, else B for an instruction-tuned
    checkpoint with a chat template, else A."""
    explicit = getattr(config, "infill_layout", None)
    if explicit is not None:
        if str(explicit).upper() not in ("A", "B"):
            raise EngineError(f"the checkpoint's infill_layout is {explicit!r}; it must be A or B")
        return str(explicit).upper()
    if getattr(tokenizer, "chat_template", None) and is_instruction_tuned(name, config):
        return "B"
    return "A"


def resolve_layout(setting: str | None, config, tokenizer, name: str) -> str:
    """A setting ("auto", "A", "B", None) for this checkpoint; B needs a chat template."""
    value = (setting or "auto").strip()
    if value.lower() == "auto":
        return checkpoint_layout(config, tokenizer, name)
    if value.upper() not in ("A", "B"):
        raise EngineError(f"unknown infill layout {setting!r}; use auto, A or B")
    if value.upper() == "B" and not getattr(tokenizer, "chat_template", None):
        raise EngineError("layout B needs a chat template and this checkpoint's tokenizer has none; use layout A")
    return value.upper()


# ----- the prompt ---------------------------------------------------------------------------


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template applied with the generation prompt, as token ids (the template adds bos)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    ids = list(out)
    return list(ids[0]) if ids and isinstance(ids[0], list) else ids


def fit_chat_prompt(tokenizer, prefix: str, suffix: str, max_tokens: int, language: str = "",
                    single_line: bool = False) -> tuple[list[int], str, str]:
    """Chat-prompt ids within `max_tokens`, cutting the code farthest from the gap first.

    Returns (ids, prefix kept, suffix kept). Cuts are whole lines (trim_context); the room in
    characters shrinks by the measured excess until the token count fits.
    """
    overhead = len(chat_ids(tokenizer, infill_messages("", "", language, single_line)))
    if overhead >= max_tokens:
        raise EngineError(f"the infill instruction alone does not fit the model's {max_tokens}-token context")
    room = min(len(prefix) + len(suffix), (max_tokens - overhead) * PRETRIM_CHARS_PER_TOKEN)
    for _ in range(MAX_FIT_ROUNDS):
        kept_prefix, kept_suffix = trim_context(prefix, suffix, room)
        ids = chat_ids(tokenizer, infill_messages(kept_prefix, kept_suffix, language, single_line))
        if len(ids) <= max_tokens:
            return ids, kept_prefix, kept_suffix
        code = len(kept_prefix) + len(kept_suffix)
        code_tokens = max(1, len(ids) - overhead)
        room = max(0, min(room - 1, int(code * (max_tokens - overhead) / code_tokens * 0.97)))
    raise EngineError(f"could not fit the code around the gap into {max_tokens} tokens")


# ----- the answer ---------------------------------------------------------------------------


def stop_ids(model, tokenizer) -> set[int]:
    """Every id that ends an answer: end-of-sequence from the text config, the top config and the
    generation config (the release lists <eos>, <turn|> and <|tool_response>), and padding."""
    stops: set[int] = set()
    sources = [model.config.get_text_config(), model.config, getattr(model, "generation_config", None)]
    for source in sources:
        for attr in ("eos_token_id", "pad_token_id"):
            value = getattr(source, attr, None) if source is not None else None
            if value is None:
                continue
            stops.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    for token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token is not None:
            stops.add(int(token))
    fill = getattr(model.config, "fill_token_id", None)
    if fill is not None:
        stops.add(int(fill))
    return stops


def answer_tokens(canvas: list[int], stops: set[int]) -> list[int]:
    """The canvas up to its first stop token."""
    out: list[int] = []
    for tok in canvas:
        if tok in stops:
            break
        out.append(tok)
    return out


def unfence(text: str) -> str:
    """The code inside a Markdown fence: a whole fenced block, or one the canvas cut before it closed."""
    match = _FENCE.match(text)
    if match:
        return match.group(1)
    if text.lstrip().startswith("```") and "\n" in text:  # opened, never closed within the budget
        return text.lstrip().split("\n", 1)[1]
    return text


def trim_suffix_overlap(text: str, suffix: str) -> str:
    """Cut the answer where it starts repeating the code after the gap.

    Two cases: the answer ends with the suffix's beginning (at least MIN_OVERLAP_CHARS of it, or
    all of a short suffix), or one of its lines starts a run of lines equal to the suffix's first
    non-blank lines (ignoring indentation, at least MIN_LINE_MATCH_CHARS characters).
    """
    if not text or not suffix:
        return text
    trimmed = True
    while trimmed:  # a model that repeats the suffix twice loses both copies
        trimmed = False
        for k in range(min(len(text), len(suffix)), 0, -1):
            if text.endswith(suffix[:k]) and (k >= MIN_OVERLAP_CHARS or k == len(suffix)) and suffix[:k].strip():
                text, trimmed = text[:-k], True
                break
    head = [line.strip() for line in suffix.splitlines() if line.strip()][:2]
    if head and sum(len(h) for h in head) >= MIN_LINE_MATCH_CHARS:
        lines = text.splitlines(keepends=True)
        offset = 0
        for i, line in enumerate(lines):
            window = [w.strip() for w in lines[i:i + len(head)]]
            if len(window) == len(head) and window == head:
                text = text[:offset]
                break
            ends_inside = len(window) < len(head) and len(head[0]) >= MIN_LINE_MATCH_CHARS
            if ends_inside and window[:1] == head[:1]:  # the answer ends after the repeat's first line
                text = text[:offset]
                break
            offset += len(line)
    if suffix.startswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text


def finish_text(tokenizer, canvas: list[int], stops: set[int], suffix: str, single_line: bool) -> tuple[str, list[int]]:
    """Canvas -> answer text: cut at the first stop, decode, unfence, trim the repeated suffix."""
    tokens = answer_tokens(canvas, stops)
    text = tokenizer.decode(tokens, skip_special_tokens=True) if tokens else ""
    text = trim_suffix_overlap(unfence(text), suffix)
    if single_line:
        text = text.split("\n", 1)[0]
    return text, tokens


# ----- one infill ---------------------------------------------------------------------------


def infill_b(engine, req: InfillRequest, cancel, stats: InfillStats, language: str = "") -> InfillResult:
    """One infill in layout B on `engine` (an engine.Engine); the caller holds its lock. `cancel`
    is the engine's StopCheck (the caller's cancel event and the request's deadline)."""
    start = time.perf_counter()
    stats.layout = "B"
    prompt, kept_prefix, kept_suffix = fit_chat_prompt(engine.tokenizer, req.prefix, req.suffix,
                                                       engine.max_prefix_tokens, language, req.single_line)
    stats.prefix_cut_lines = req.prefix.count("\n") - kept_prefix.count("\n")
    stats.suffix_cut = len(kept_suffix) < len(req.suffix)
    anchor = None
    if engine.token_shift:
        prompt, anchor_id = split_anchor(prompt)
        anchor = torch.tensor(anchor_id, device=engine.device)
    span_ids = engine._encode(req.span) if req.span else []
    budget = engine._budget(req, span_ids)
    stops = stop_ids(engine.model, engine.tokenizer)
    layout = CanvasLayout(ids=torch.full((budget,), engine.special.pad, dtype=torch.long),
                          clamped=torch.zeros(budget, dtype=torch.bool), span_slots=budget,
                          suffix_tokens=0, suffix_cut=stats.suffix_cut)
    stats.prefix_tokens, stats.canvas_length, stats.span_budget = len(prompt), budget, budget
    cache = engine._encode_prefix(prompt, req.doc_id, stats, cancel)
    t_enc = time.perf_counter()
    stats.encode_ms = (t_enc - start) * 1000
    seeded = None
    if req.span and req.seed_with_span:
        seed = (span_ids[:budget] + [engine.special.first_eos] + [engine.special.pad] * budget)[:budget]
        seeded = torch.tensor([seed], device=engine.device)
    rules = SamplerRules.build(DenoiseSettings.from_model(engine.model, req.steps), engine.vocab_size,
                               banned=[engine.special.bos] if engine.special.bos is not None else [],
                               fill=engine.special.fill, device=engine.device)
    generator = torch.Generator(device=engine.device).manual_seed(req.seed if req.seed is not None else 0)
    positions = torch.arange(len(prompt), len(prompt) + budget, device=engine.device).unsqueeze(0)
    spec = CanvasSpec.build(layout.ids.to(engine.device)[None], layout.clamped.to(engine.device)[None], positions,
                            start=seeded, anchor=anchor)
    outcome = engine.run_denoise(cache, spec, rules, generator, cancel, req.on_step, stats)
    t_den = time.perf_counter()
    text, tokens = finish_text(engine.tokenizer, outcome.canvas[0].tolist(), stops, kept_suffix, req.single_line)
    if outcome.steps == 0:  # stopped before the first step: the canvas is not a draft yet
        text, tokens = "", []
    stats.span_tokens = len(tokens)
    stats.tokens_per_forward = len(tokens) / outcome.forwards if outcome.forwards else 0.0
    stats.post_ms = (time.perf_counter() - t_den) * 1000
    stats.total_ms = (time.perf_counter() - start) * 1000
    confidence = outcome.confidence[0, : len(tokens)].tolist()
    pieces = engine.tokenizer.convert_ids_to_tokens(tokens) if tokens else []
    return InfillResult(text=text, status=cancel.reason() if outcome.cancelled else "ok", confidence=confidence,
                        tokens=pieces, stats=stats)
