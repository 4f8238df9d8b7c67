"""Structural tests of the rendered digest: content, links, escaping, size and error messages.

The HTML is parsed, never compared with a stored snapshot; content is built with small factories.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from digest.errors import ConfigError, DigestError, TemplateError
from digest.render.placeholders import (
    NAME_HTML,
    NAME_TEXT,
    PREFERENCES_URL,
    TOKENS,
    UNSUBSCRIBE_URL,
    VOTE_TOKEN,
    neutral_substitutions,
    subscriber_substitutions,
)
from digest.render.variant import (
    clipped_by_gmail,
    default_templates_dir,
    render_variant,
)
from digest.send.base import substitute
from tests.content_factories import (
    ADDRESS,
    GMAIL_CLIP_BYTES,
    HOSTILE,
    SITE,
    make_content,
    make_pair,
    make_tool,
)
from tests.support.rendered import parse, render

# --- a small DOM summary -----------------------------------------------------------------------


def preheader_of(html: str) -> str:
    # MJML writes the preheader as the first, hidden element of the body.
    body = html[html.index("<body") :]
    start = body.index(">", body.index("<div")) + 1
    return body[start : body.index("</div>", start)]


def assert_no_active_content(html: str) -> None:
    parsed = parse(html)
    names = [name for name, _ in parsed.tags]
    assert "script" not in names
    assert "iframe" not in names and "object" not in names and "embed" not in names
    for name, attrs in parsed.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), f"<{name} {key}=...> carries an event handler"
            if key in ("href", "src", "action", "formaction", "background"):
                cleaned = "".join(value.split()).lower()
                assert not cleaned.startswith(("javascript:", "data:", "vbscript:")), value


# --- content and links -------------------------------------------------------------------------


def test_subject_title_lang_and_preheader_come_from_the_content() -> None:
    # The envelope of the email (subject, <title>, lang, preheader) says what the week holds.
    content = make_content()
    rendered = render(content)
    parsed = parse(rendered.html)
    assert rendered.subject == content.subject
    assert parsed.title == content.subject
    assert parsed.attrs("html")[0]["lang"] == "en"
    assert preheader_of(rendered.html) == content.preheader


def test_subject_is_one_header_safe_line() -> None:
    # A subject with line breaks would split the Subject header; it is folded to one line.
    rendered = render(make_content(subject="Two\r\nlines\tand  gaps"))
    assert rendered.subject == "Two lines and gaps"


def test_every_pair_shows_both_tools_and_links_to_its_comparison() -> None:
    # Each head-to-head names both tools and has a button to its comparison page on the site.
    content = make_content(pairs=4)
    parsed = parse(render(content).html)
    visible = parsed.visible()
    hrefs = parsed.hrefs()
    for pair in content.pairs:
        assert f"{pair.a.name} vs {pair.b.name}" in visible
        assert pair.verdict in visible
        assert f"{SITE}{pair.compare_path}?r={VOTE_TOKEN}" in hrefs
        for tool in (pair.a, pair.b):
            assert tool.tagline in visible
            assert tool.panel_label in visible
            assert tool.community_label in visible
            assert tool.pricing_label in visible
            assert tool.url in hrefs
            assert f"“{tool.quote}”" in visible
    assert "75% ship" in visible and "40% ship" in visible


def test_ship_share_bar_handles_unanimous_panels() -> None:
    # A 0% or 100% panel draws one full bar segment, never an empty or negative one.
    pair = make_pair(
        0,
        a=make_tool("all-ship", ship_share=1.0, panel_label="4 ship / 0 skip"),
        b=make_tool("all-skip", ship_share=0.0, panel_label="0 ship / 4 skip", is_new=False),
    )
    parsed = parse(render(make_content(pairs=[pair], also_new=0)).html)
    visible = parsed.visible()
    assert "100% ship" in visible and "0% ship" in visible
    widths = [attrs.get("width") for attrs in parsed.attrs("td") if attrs.get("height") == "6"]
    assert widths == ["100%", None]


def test_also_new_lists_unpaired_tools_and_pending_panels() -> None:
    # Tools without a rival still appear, and a tool without reviews says its verdict is pending.
    content = make_content(pairs=1, also_new=3)
    rendered = render(content)
    visible = parse(rendered.html).visible()
    assert "Also new this week".upper() in visible
    for tool in content.also_new:
        assert tool.name in visible
        assert tool.tagline in visible
    assert "Panel verdict pending" in visible
    assert "Panel verdict pending" in rendered.text


def test_footer_carries_token_links_archive_and_postal_address() -> None:
    # Every email offers unsubscribe, preferences and the web version, and shows the address.
    parsed = parse(render(make_content()).html)
    hrefs = parsed.hrefs()
    assert UNSUBSCRIBE_URL in hrefs
    assert PREFERENCES_URL in hrefs
    assert f"{SITE}/archive/2026-W47?r={VOTE_TOKEN}" in hrefs
    assert ADDRESS in parsed.visible()
    assert "because you subscribed" in parsed.visible()


def test_footer_names_the_categories_of_a_category_variant() -> None:
    # A subscriber who chose categories is told which ones this email was cut for.
    picked = render(make_content(categories=["Developer Tools", "Writing"]))
    everything = render(make_content(categories=[]))
    assert "for Developer Tools, Writing." in parse(picked.html).visible()
    assert "for Developer Tools, Writing." in " ".join(picked.text.split())
    assert "subscribed to Verdict Digest." in parse(everything.html).visible()


def test_greeting_keeps_the_name_token_for_the_sender() -> None:
    # The body is compiled once per variant, so the greeting holds a token, not a name.
    rendered = render(make_content())
    assert f"Hi {NAME_HTML}," in parse(rendered.html).visible()
    assert f"Hi {NAME_TEXT}," in rendered.text
    assert NAME_TEXT not in rendered.html and NAME_HTML not in rendered.text


def test_tokens_survive_compiling_and_fill_into_working_links() -> None:
    # mjml-python and css-inline must leave tokens intact, so per-subscriber links resolve.
    rendered = render(make_content())
    unsubscribe = f"{SITE}/u/abc.DEF_123?list=weekly&src=email"
    preferences = f"{SITE}/p/xyz-789"
    html = substitute(
        rendered.html,
        subscriber_substitutions(
            unsubscribe_url=unsubscribe,
            preferences_url=preferences,
            name='<marquee>"Ada"</marquee> Lovelace',
            vote_token="dm90ZTo0Mg.abc",
        ),
    )
    text = substitute(
        rendered.text,
        subscriber_substitutions(
            unsubscribe_url=unsubscribe,
            preferences_url=preferences,
            name='<marquee>"Ada"</marquee> Lovelace',
            vote_token="dm90ZTo0Mg.abc",
        ),
    )
    parsed = parse(html)
    assert unsubscribe in parsed.hrefs() and preferences in parsed.hrefs()
    assert 'Hi <marquee>"Ada"</marquee>,' in parsed.visible()
    assert "marquee" not in [name for name, _ in parsed.tags]
    assert f"Unsubscribe: {unsubscribe}" in text
    assert 'Hi <marquee>"Ada"</marquee>,' in text
    assert not any(token in html or token in text for token in TOKENS)


def test_missing_name_greets_with_there() -> None:
    # A subscriber without a name is greeted "Hi there," rather than "Hi ,".
    html = substitute(
        render(make_content()).html,
        subscriber_substitutions(
            unsubscribe_url="https://x.test/u",
            preferences_url="https://x.test/p",
            name="  ",
            vote_token="dm90ZTo0Mg.abc",
        ),
    )
    assert "Hi there," in parse(html).visible()


def test_blank_tokens_leaves_no_personal_link_in_the_archive() -> None:
    # The public archive page must carry nobody's token, only neutral links and greeting.
    rendered = render(make_content())
    html = substitute(rendered.html, neutral_substitutions(SITE))
    text = substitute(rendered.text, neutral_substitutions(None))
    assert not any(token in html or token in text for token in TOKENS)
    hrefs = parse(html).hrefs()
    assert f"{SITE}/unsubscribe" in hrefs and f"{SITE}/preferences" in hrefs
    assert "Hi there," in parse(html).visible() and "Hi there," in text


# --- escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_catalog_text_renders_as_text_never_as_markup(evil: str) -> None:
    # Untrusted catalog text in any field shows literally and never becomes script or handler.
    pair = make_pair(
        0,
        a=make_tool(
            "evil-tool",
            name=evil,
            vendor=evil,
            tagline=evil,
            best_for=evil,
            quote=evil,
            quote_reviewer=evil,
            category=evil,
            panel_label=evil,
            community_label=evil,
            pricing_label=evil,
        ),
        category=evil,
        verdict=evil,
    )
    content = make_content(
        pairs=[pair],
        also_new=0,
        subject=f"{evil} vs Rival",
        preheader=evil,
        week_label=evil,
        categories=[evil],
    )
    content.also_new.append(make_tool("evil-extra", name=evil, tagline=evil, vendor=evil))
    rendered = render_variant(content, site_url=SITE, postal_address=evil)
    assert_no_active_content(rendered.html)
    parsed = parse(rendered.html)
    assert " ".join(evil.split()) in parsed.visible()
    assert parsed.title == f"{evil} vs Rival"
    assert preheader_of(rendered.html).count("<") == 0
    assert "49" not in parsed.visible() and "49" not in rendered.text
    assert evil in rendered.text


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        'https://ok.example.com/" onclick="alert(1)',
        "https://ok.example.com/\nnext",
        "//no-scheme.example.com/x",
        "ftp://files.example.com/x",
    ],
)
def test_a_tool_url_that_is_not_plain_http_never_becomes_a_link(url: str) -> None:
    # Only absolute http(s) URLs reach an href; anything else shows the name without a link.
    content = make_content(pairs=[make_pair(0, a=make_tool("odd-url", url=url))], also_new=0)
    content.also_new.append(make_tool("odd-extra", url=url))
    rendered = render(content)
    assert_no_active_content(rendered.html)
    hrefs = parse(rendered.html).hrefs()
    assert not any(url.strip() in href for href in hrefs if url.strip())
    assert "Odd Url" in parse(rendered.html).visible()
    assert url.strip() not in rendered.text


def test_comparison_links_never_leave_the_site() -> None:
    # A malformed compare path still yields a link under DIGEST_SITE_URL, never another host.
    pair = make_pair(0, compare_path="//evil.example/compare/x")
    rendered = render(make_content(pairs=[pair], also_new=0))
    compare = [h for h in parse(rendered.html).hrefs() if "compare" in h]
    assert compare == [f"{SITE}/evil.example/compare/x"]
    assert f"{SITE}/evil.example/compare/x" in rendered.text.split()


def test_a_site_url_that_is_not_http_is_a_config_error() -> None:
    # Every link is built on DIGEST_SITE_URL; a wrong value must stop the render, clearly.
    with pytest.raises(ConfigError, match="DIGEST_SITE_URL"):
        render_variant(make_content(), site_url="javascript:alert(1)", postal_address=ADDRESS)


def test_catalog_text_cannot_pose_as_a_subscriber_token() -> None:
    # A tagline holding "%%unsubscribe_url%%" must not turn into someone's unsubscribe link.
    sneaky = f"Click {UNSUBSCRIBE_URL} or {NAME_HTML} / {NAME_TEXT}"
    content = make_content(pairs=[make_pair(0, a=make_tool("sneaky", tagline=sneaky))], also_new=0)
    rendered = render(content)
    html = substitute(
        rendered.html,
        subscriber_substitutions(
            unsubscribe_url="https://x.test/u/secret",
            preferences_url="https://x.test/p/secret",
            name="Grace",
            vote_token="dm90ZTo0Mg.abc",
        ),
    )
    text = substitute(
        rendered.text,
        subscriber_substitutions(
            unsubscribe_url="https://x.test/u/secret",
            preferences_url="https://x.test/p/secret",
            name="Grace",
            vote_token="dm90ZTo0Mg.abc",
        ),
    )
    assert html.count("https://x.test/u/secret") == 1
    assert text.count("https://x.test/u/secret") == 1
    assert html.count("Grace") == 1 and text.count("Grace") == 1


# --- budgets -----------------------------------------------------------------------------------


def test_a_ten_pair_week_stays_under_gmails_clipping_size() -> None:
    # Gmail clips HTML beyond 102 KB, hiding the footer with the unsubscribe link.
    rendered = render(make_content(pairs=10, also_new=3, categories=["Developer Tools"]))
    size = len(rendered.html.encode("utf-8"))
    print(f"HTML for 10 pairs and 3 new tools: {size} bytes")
    assert size < GMAIL_CLIP_BYTES
    assert not clipped_by_gmail(rendered.html)


def test_an_oversized_week_is_reported_as_clipped() -> None:
    # The pipeline can only warn the editor about clipping if the renderer says so.
    long_quote = "A long and detailed pull quote about this tool. " * 12
    pairs = [
        make_pair(i, a=make_tool(f"big-{i}", quote=long_quote, tagline=long_quote))
        for i in range(14)
    ]
    assert clipped_by_gmail(render(make_content(pairs=pairs)).html)


def test_the_email_loads_nothing_from_elsewhere() -> None:
    # No web fonts, stylesheets or scripts: the email must read fully with images off.
    html = render(make_content()).html
    parsed = parse(html)
    names = [name for name, _ in parsed.tags]
    assert "link" not in names and "script" not in names
    assert not any("@import" in css or "@font-face" in css for css in parsed.styles)
    assert "fonts.googleapis.com" not in html
    for attrs in parsed.attrs("img"):
        assert attrs.get("alt") is not None


def test_media_queries_stay_and_marked_rules_are_inlined() -> None:
    # Responsive columns need MJML's media queries; clients that drop <style> need inline CSS.
    parsed = parse(render(make_content()).html)
    assert any("@media" in css and "mj-column-per-50" in css for css in parsed.styles)
    buttons = [a for a in parsed.attrs("a") if a.get("href", "").startswith(f"{SITE}/compare/")]
    assert buttons and all("display:inline-block" in a["style"] for a in buttons)
    classes = {name for _, a in parsed.tags for name in a.get("class", "").split()}
    assert not classes & {"vd-button", "vd-badge", "vd-gap", "vd-quote"}  # inlined, so dropped
    assert {"vd-card", "vd-rival"} <= classes  # media-query targets stay


# --- the text part -----------------------------------------------------------------------------


def test_text_part_has_the_same_pairs_and_links() -> None:
    # Readers of the plain-text part get the same verdicts and every link the HTML has.
    content = make_content(pairs=3, also_new=2, categories=["Developer Tools"])
    rendered = render(content)
    text = rendered.text
    flat = " ".join(text.split())
    for pair in content.pairs:
        assert f"{pair.a.name} vs {pair.b.name}" in text
        assert f"{SITE}{pair.compare_path}?r={VOTE_TOKEN}" in text.split()
        assert " ".join(pair.verdict.split()) in flat
        for tool in (pair.a, pair.b):
            assert tool.url in text.split()
            assert tool.tagline in flat
    for tool in content.also_new:
        assert tool.name in text
    assert f"View in browser: {SITE}/archive/2026-W47" in text
    assert f"Manage preferences: {PREFERENCES_URL}" in text
    assert f"Unsubscribe: {UNSUBSCRIBE_URL}" in text
    assert ADDRESS in text
    assert "<" not in text and "&middot;" not in text and "&amp;" not in text


def test_text_part_wraps_prose_but_never_breaks_a_link() -> None:
    # Long prose wraps for reading; URLs stay whole so they remain clickable.
    long_url = "https://tools.example.com/" + "very-long-path-segment/" * 6
    content = make_content(pairs=[make_pair(0, a=make_tool("long", url=long_url))], also_new=0)
    text = render(content).text
    assert long_url in text.split()
    prose = [line for line in text.splitlines() if "://" not in line and "%%" not in line]
    assert max(len(line) for line in prose) <= 72


# --- template errors ---------------------------------------------------------------------------


@pytest.fixture
def broken_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), target)
    return target


def _insert_line(path: Path, after: int, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(after, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return after + 1


def _render_error(directory: Path) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render(make_content(), templates_dir=directory)
    error = caught.value
    assert isinstance(error, DigestError)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert "Traceback" not in str(error) and "\n" not in str(error)
    return error


def test_jinja_syntax_error_names_the_file_and_line(broken_templates: Path) -> None:
    # An editor's typo in a partial is reported where it is, not as a traceback.
    line = _insert_line(broken_templates / "partials" / "pair_card.mjml.j2", 3, "{% if %}")
    message = str(_render_error(broken_templates))
    assert "partials/pair_card.mjml.j2" in message and f"line {line}" in message


def test_jinja_unknown_field_names_the_file_and_line(broken_templates: Path) -> None:
    # A template asking for a field the content lacks names that template line.
    path = broken_templates / "partials" / "footer.mjml.j2"
    line = _insert_line(path, 3, "<mj-text>{{ content.no_such_field }}</mj-text>")
    message = str(_render_error(broken_templates))
    assert "partials/footer.mjml.j2" in message and f"line {line}" in message
    assert "no_such_field" in message


def test_text_template_error_names_the_text_template(broken_templates: Path) -> None:
    # The plain-text template is checked as strictly as the MJML one.
    line = _insert_line(broken_templates / "digest.txt.j2", 2, "{{ content.nope }}")
    message = str(_render_error(broken_templates))
    assert "digest.txt.j2" in message and f"line {line}" in message


def test_unclosed_mjml_element_names_the_template_and_line(broken_templates: Path) -> None:
    # A missing closing tag is traced back to the partial line that opened it.
    path = broken_templates / "partials" / "tool_side.mjml.j2"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, text in enumerate(lines) if text.strip() == "</mj-text>")
    del lines[index]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    opened = next(i for i, text in enumerate(lines) if text.strip().startswith("<mj-text")) + 1
    message = str(_render_error(broken_templates))
    assert "MJML" in message
    assert "partials/tool_side.mjml.j2" in message and f"line {opened}" in message


def test_misspelt_mjml_element_names_the_template_and_line(broken_templates: Path) -> None:
    # mjml-python silently drops unknown elements; a misspelling must fail loudly instead.
    path = broken_templates / "partials" / "footer.mjml.j2"
    text = path.read_text(encoding="utf-8").replace("<mj-column>", "<mj-colum>", 1)
    path.write_text(text.replace("</mj-column>", "</mj-colum>", 1), encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "<mj-colum>" in t)
    message = str(_render_error(broken_templates))
    assert "mj-colum" in message and "partials/footer.mjml.j2" in message
    assert f"line {line}" in message


def test_html_left_open_inside_mj_text_names_the_template_and_line(
    broken_templates: Path,
) -> None:
    # mjml-python rejects unbalanced HTML without a line; the error still points at the source.
    path = broken_templates / "partials" / "footer.mjml.j2"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, t in enumerate(lines) if "{{ postal_address }}" in t)
    lines[index] = lines[index].replace("</p>", "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = str(_render_error(broken_templates))
    assert "partials/footer.mjml.j2" in message and f"line {index + 1}" in message


def test_templates_dir_finds_the_shipped_templates() -> None:
    # The renderer finds its templates without configuration, in the repo or in a wheel.
    directory = default_templates_dir()
    assert (directory / "digest.mjml.j2").is_file()
    assert (directory / "digest.txt.j2").is_file()
    assert (directory / "partials" / "pair_card.mjml.j2").is_file()
