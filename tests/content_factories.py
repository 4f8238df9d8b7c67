"""Small builders of digest content for the rendering tests: one call, a realistic week."""

from __future__ import annotations

from typing import Any

from digest.content.frozen import DigestContent, PairCard, ToolCard

SITE = "https://verdicts.example.com"
ADDRESS = "Verdict Digest Ltd, 10 Harbour Road, Portsmouth PO1 2AB, United Kingdom"
GMAIL_CLIP_BYTES = 102 * 1024

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '" onmouseover="x',
    "' onfocus='x' autofocus='",
    "</mj-text><mj-raw><script>alert(2)</script></mj-raw><mj-text>",
    "{{ 7 * 7 }} {% if true %}jinja{% endif %}",
    "Rocket 🚀 émoji ✨",
    "مرحبا بالعالم עברית",
    "javascript:alert(3)",
]


def make_tool(slug: str, **overrides: Any) -> ToolCard:
    fields: dict[str, Any] = {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "vendor": "Acme Labs",
        "category": "Developer Tools",
        "tagline": "An assistant that reads your repository and proposes reviewed patches",
        "url": f"https://tools.example.com/{slug}",
        "pricing": "freemium",
        "pricing_label": "Freemium",
        "ship_count": 3,
        "skip_count": 1,
        "ship_share": 0.75,
        "panel_label": "3 ship / 1 skip",
        "community_label": "41 ship / 9 skip",
        "best_for": "Teams that review every change before it merges",
        "quote": (
            "It found the flaky test we had ignored for a month and wrote a fix I would have "
            "approved from a colleague; setup took five minutes."
        ),
        "quote_reviewer": "Builder",
        "quote_verdict": "ship",
        "is_new": True,
    }
    fields.update(overrides)
    return ToolCard(**fields)


def make_pair(index: int, **overrides: Any) -> PairCard:
    a = make_tool(f"new-tool-{index}")
    b = make_tool(
        f"rival-tool-{index}",
        is_new=False,
        ship_share=0.4,
        panel_label="2 ship / 3 skip",
        quote_verdict="skip",
        quote_reviewer="Skeptic",
    )
    fields: dict[str, Any] = {
        "a": a,
        "b": b,
        "category": "Developer Tools",
        "verdict": f"Both ship; {a.name} has the stronger panel and the friendlier price",
        "compare_path": f"/compare/{a.slug}-vs-{b.slug}",
    }
    fields.update(overrides)
    return PairCard(**fields)


def make_content(
    pairs: int | list[PairCard] = 3, also_new: int = 2, **overrides: Any
) -> DigestContent:
    pending = make_tool(
        "pending-tool",
        ship_share=None,
        ship_count=0,
        skip_count=0,
        panel_label="Panel verdict pending",
        community_label="No community votes yet",
        quote=None,
        quote_reviewer=None,
        quote_verdict=None,
    )
    extras = [pending] + [make_tool(f"extra-tool-{i}", category="Writing") for i in range(also_new)]
    fields: dict[str, Any] = {
        "week": "2026-W47",
        "week_label": "16–22 November 2026",
        "subject": "New Tool 0 vs Rival Tool 0, and 2 more verdicts",
        "preheader": "3 head-to-heads: New Tool 0 vs Rival Tool 0, New Tool 1 vs Rival Tool 1, ...",
        "pairs": [make_pair(i) for i in range(pairs)] if isinstance(pairs, int) else pairs,
        "also_new": extras[:also_new],
        "categories": [],
    }
    fields.update(overrides)
    return DigestContent(**fields)
