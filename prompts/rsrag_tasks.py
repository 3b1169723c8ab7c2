"""RS-RAG knowledge-augmented prompts for captioning, scene classification and VQA.

Templates are versioned files in this package (``rsrag_caption.v1.txt``, ``rsrag_classify.v1.txt``,
``rsrag_vqa.v1.txt``). Retrieved entries are inserted, best first, as delimited and labelled data blocks::

    <<<KNOWLEDGE id="rswk-00017" name="Eiffel Tower" category="tower">>>
    ...entry text...
    <<<END KNOWLEDGE>>>

Knowledge text is data, never instructions: the templates say so, and the entry text cannot break out of its
block (marker sequences ``<<<`` / ``>>>`` inside entry text are neutralised, so an entry cannot close its own
block or open a fake one). Entries are added until the token budget is spent; the last one that fits
partially is cut, the rest are listed as dropped. Placeholders are filled in one pass, so text inside an
entry or the question that looks like a placeholder is never expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from rsrag.prompts import load_prompt

if TYPE_CHECKING:
    from rsrag.tools.knowledge import KnowledgeHit

Task = Literal["caption", "classify", "vqa"]
TEMPLATES: dict[str, str] = {"caption": "rsrag_caption", "classify": "rsrag_classify", "vqa": "rsrag_vqa"}
_MARKERS = re.compile(r"<{3,}|>{3,}")
_PLACEHOLDER = re.compile(r"\{(knowledge|question|classes|first_id)\}")


def approx_tokens(text: str) -> int:
    """A tokenizer-free token estimate (about 4 characters per token, at least one per word)."""
    return max(len(text) // 4, len(text.split()))


class BuiltPrompt(BaseModel):
    """A filled prompt with what it contains."""

    text: str
    task: str
    template_version: str
    cited_ids: list[str]
    """Ids of the entries included (in the order given), which an answer may cite."""
    truncated_ids: list[str]
    dropped_ids: list[str]
    tokens: int


def _clean(text: str) -> str:
    return _MARKERS.sub(lambda m: "\u2039" * len(m.group()) if m.group()[0] == "<" else "\u203a" * len(m.group()), text)


def _attr(value: str) -> str:
    return _clean(value).replace('"', "'").replace("\n", " ")[:120]


def knowledge_block(entry_id: str, name: str, category: str, body: str) -> str:
    """One delimited, labelled knowledge block."""
    return (f'<<<KNOWLEDGE id="{_attr(entry_id)}" name="{_attr(name)}" category="{_attr(category)}">>>\n'
            f"{_clean(body).strip()}\n<<<END KNOWLEDGE>>>")


def build_prompt(task: Task, hits: Sequence[KnowledgeHit], *, question: str | None = None,
                 classes: Sequence[str] | None = None, token_budget: int = 1500,
                 count_tokens: Callable[[str], int] = approx_tokens, version: int = 1) -> BuiltPrompt:
    """Fill the task's template with retrieved entries (already ranked/re-ranked), within ``token_budget``.

    Args:
        task: ``caption``, ``classify`` or ``vqa``.
        hits: retrieved entries, best first (e.g. from :meth:`KnowledgeBase.search`).
        question: the analyst's question (``vqa``).
        classes: the candidate classes (``classify``).
        token_budget: the most tokens the whole prompt may take (by ``count_tokens``).
        count_tokens: token counter (default :func:`approx_tokens`; pass the VLM tokenizer's for precision).
        version: template version.

    Raises:
        ValueError: unknown task, a missing question/classes, or a budget too small for the bare template.
    """
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r}; use caption, classify or vqa")
    if task == "vqa" and not (question or "").strip():
        raise ValueError("the vqa prompt needs the analyst's question")
    if task == "classify" and not classes:
        raise ValueError("the classify prompt needs the candidate classes")
    template = load_prompt(TEMPLATES[task], version)
    values = {"question": (question or "").strip(), "classes": ", ".join(classes or []),
              "first_id": hits[0].entry.id if hits else "entry-id"}

    def fill(knowledge: str) -> str:
        vals = {**values, "knowledge": knowledge or "(no knowledge entries were retrieved)"}
        return _PLACEHOLDER.sub(lambda m: vals[m.group(1)], template.text)

    base = count_tokens(fill(""))
    if base > token_budget:
        raise ValueError(f"token budget {token_budget} is smaller than the bare {template.version} prompt ({base} tokens)")
    blocks: list[str] = []
    cited: list[str] = []
    truncated: list[str] = []
    dropped: list[str] = []
    for hit in hits:
        e = hit.entry
        if dropped:
            dropped.append(e.id)
            continue
        body = e.search_text()
        block = knowledge_block(e.id, e.name, e.category, body)
        if count_tokens(fill("\n\n".join([*blocks, block]))) <= token_budget:
            blocks.append(block)
            cited.append(e.id)
            continue
        lo, hi = 0, len(body)  # longest prefix of the body that still fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial = knowledge_block(e.id, e.name, e.category, body[:mid] + " [...]")
            if count_tokens(fill("\n\n".join([*blocks, trial]))) <= token_budget:
                lo = mid
            else:
                hi = mid - 1
        if lo >= 80:
            blocks.append(knowledge_block(e.id, e.name, e.category, body[:lo] + " [...]"))
            cited.append(e.id)
            truncated.append(e.id)
        else:
            dropped.append(e.id)
    text = fill("\n\n".join(blocks))
    return BuiltPrompt(text=text, task=task, template_version=template.version, cited_ids=cited,
                       truncated_ids=truncated, dropped_ids=dropped, tokens=count_tokens(text))
