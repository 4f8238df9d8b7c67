"""What a reader notices in the email: verdict colours, community shares, also-new verdicts,
headings that fit the week, tool names that look like links, greetings and shared vendors.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from digest.config import Settings
from digest.errors import ConfigError
from digest.links import LinkTemplates
from digest.render.placeholders import NAME_HTML, NAME_TEXT, greeting_substitutions
from tests.content_factories import make_content, make_pair, make_tool
from tests.support.rendered import parse, render

SKIPPED = {
    "ship_count": 1,
    "skip_count": 2,
    "ship_share": 1 / 3,
    "panel_label": "1 ship / 2 skip",
    "vendor": "Other Co",
}


def _share_colours(html: str) -> dict[str, str]:
    return dict(
        (share, colour)
        for colour, share in re.findall(r'<b style="color:(#[0-9a-f]{6});?">(\d+)% ship</b>', html)
    )


def test_the_panel_share_is_coloured_by_the_verdict_not_green_for_all() -> None:
    # "33% ship" of a tool the panel skips is red; "75% ship" of a shipped tool is green.
    pair = make_pair(0, b=make_tool("skipped", **SKIPPED))
    rendered = render(make_content(pairs=[pair], also_new=0))
    assert _share_colours(rendered.html) == {"75": "#15803d", "33": "#b91c1c"}
    # The text part has no colour: it names a skip or a split beside the share; a ship is said
    # once ("75% ship"), not three times ("ship, 75% ship (3 ship ..."), in both parts.
    assert "Panel: 75% ship (3 ship / 1 skip)" in rendered.text
    assert "Panel: skip, 33% ship (1 ship / 2 skip)" in rendered.text
    shown = parse(rendered.html).visible()
    assert "Panel 75% ship · 3 ship / 1 skip" in shown and "· ship ·" not in shown
    assert "Panel 33% ship · skip · 1 ship / 2 skip" in shown


def test_community_votes_get_a_percentage_in_both_parts() -> None:
    # 3 ship / 1 skip from the community reads 75% ship, as the panel's share does.
    tool = make_tool("voted", community_ship=3, community_skip=1, community_label="3 ship / 1 skip")
    rendered = render(make_content(pairs=[make_pair(0, a=tool)], also_new=0))
    assert "Community 75% ship · 3 ship / 1 skip" in parse(rendered.html).visible()
    assert "Community: 75% ship (3 ship / 1 skip)" in rendered.text


def test_an_also_new_tool_with_panel_votes_shows_its_verdict() -> None:
    # Counts alone ("1 ship / 2 skip") leave the reader to work out the verdict.
    tool = make_tool("also-skipped", category="Writing", **SKIPPED)
    rendered = render(make_content(pairs=[], also_new=0).model_copy(update={"also_new": [tool]}))
    assert "Panel skip · 1 ship / 2 skip" in parse(rendered.html).visible()
    assert "Panel: skip (1 ship / 2 skip)" in rendered.text


def test_a_week_without_pairs_does_not_promise_head_to_heads() -> None:
    # The masthead says "Head-to-head verdicts" only when the email holds one.
    without = render(make_content(pairs=[], also_new=2)).html
    with_pairs = render(make_content(pairs=1, also_new=0)).html
    assert "Head-to-head verdicts" not in parse(without).visible()
    assert "The week's new AI tools" in parse(without).visible()
    assert "Head-to-head verdicts" in parse(with_pairs).visible()


def test_tool_names_are_styled_as_links() -> None:
    # A link in the body's own colour without underline is not seen as a link.
    html = render(make_content(pairs=1, also_new=1)).html
    anchors = re.findall(r'<a href="https://tools\.example\.com/[^"]+" style="([^"]*)"', html)
    assert anchors
    for style in anchors:
        assert "text-decoration:underline" in style
        assert "color:#111827" not in style


@pytest.mark.parametrize(
    ("name", "greeted"),
    [
        ("Liskov, Barbara", "Barbara"),
        ("Ada Lovelace", "Ada"),
        ("Dr. Grace Hopper", "Grace"),
        ("Zoë O'Brien, PhD", "Zoë"),
        ("Cher", "Cher"),
        ("J. Smith", "there"),
        ("Smith, J.", "there"),
        ("Doe, Jane, Jr.", "there"),
        ("Smith, Jr.", "there"),
        ("山田 太郎", "there"),
        ("김민준", "there"),
        ("Dvořák, Antonín", "Antonín"),
        ("   ", "there"),
        (None, "there"),
    ],
)
def test_the_greeting_uses_a_first_name_only_when_one_is_known(
    name: str | None, greeted: str
) -> None:
    # "Hi Liskov, Barbara," greets a surname; unsure cases get the neutral "Hi there,".
    values = greeting_substitutions(name)
    assert values[NAME_TEXT] == greeted
    assert values[NAME_HTML] == greeted


def test_the_greeting_escapes_a_hostile_first_name() -> None:
    # A first name is untrusted subscriber text: escaped for the HTML part, raw for the text.
    values = greeting_substitutions('<b>"Eve"</b> Hacker')
    assert values[NAME_HTML] == "&lt;b&gt;&quot;Eve&quot;&lt;/b&gt;"
    assert values[NAME_TEXT] == '<b>"Eve"</b>'


def test_a_pair_from_one_vendor_says_so_in_its_header() -> None:
    # Two tools of the same maker are no independent choice: the header tells the reader.
    same = make_pair(0, b=make_tool("sibling", vendor="acme labs"))
    other = make_pair(1, b=make_tool("rival", vendor="Other Co"))
    rendered = render(make_content(pairs=[same, other], also_new=0))
    visible = parse(rendered.html).visible()
    assert visible.count("BOTH BY ACME LABS") == 1
    assert "Developer Tools - both by Acme Labs" in rendered.text
    assert rendered.text.count("both by") == 1


def test_link_templates_send_comparison_and_tool_links_there_quoted() -> None:
    # DIGEST_COMPARE_URL and DIGEST_TOOL_URL replace the site's links, slugs URL-quoted.
    templates = LinkTemplates(
        compare="https://cmp.example.com/{a}/versus/{b}", tool="https://cmp.example.com/t/{slug}"
    )
    pair = make_pair(0, a=make_tool("a/b"), b=make_tool("c?d", is_new=False))
    rendered = render(make_content(pairs=[pair], also_new=0), link_templates=templates)
    hrefs = parse(rendered.html).hrefs()
    assert "https://cmp.example.com/a%2Fb/versus/c%3Fd" in hrefs
    assert {"https://cmp.example.com/t/a%2Fb", "https://cmp.example.com/t/c%3Fd"} <= set(hrefs)
    assert "https://cmp.example.com/a%2Fb/versus/c%3Fd" in rendered.text.split()
    assert not [h for h in hrefs if "/compare/" in h]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGEST_COMPARE_URL", "https://cmp.example.com/{a}"),
        ("DIGEST_COMPARE_URL", "ftp://cmp.example.com/{a}-vs-{b}"),
        ("DIGEST_COMPARE_URL", "javascript:alert(1)//{a}{b}"),
        ("DIGEST_TOOL_URL", "https://cmp.example.com/tools/"),
        ("DIGEST_TOOL_URL", "/tools/{slug}"),
    ],
)
def test_a_bad_link_template_is_a_config_error_naming_the_variable(
    variable: str, value: str
) -> None:
    # A template without its placeholders, or not http(s), would send every reader astray.
    with pytest.raises(ConfigError) as caught:
        values: dict[str, Any] = {variable: value}
        Settings(_env_file=None, **values)
    assert variable in str(caught.value)
    assert "leave it unset" in str(caught.value)


def test_good_link_templates_reach_link_templates_from_settings() -> None:
    # The settings' values are what the renderer is handed, unchanged.
    settings = Settings(
        _env_file=None,
        DIGEST_COMPARE_URL="https://cmp.example.com/{a}-vs-{b}",
        DIGEST_TOOL_URL="https://cmp.example.com/t/{slug}",
    )
    templates = LinkTemplates.from_settings(settings)
    assert templates.compare_url("x", "y") == "https://cmp.example.com/x-vs-y"
    assert templates.tool_url("z") == "https://cmp.example.com/t/z"
