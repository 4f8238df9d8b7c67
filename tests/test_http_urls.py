"""One http(s)-URL rule for the catalog import, the email renderer and the web pages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from digest.catalog.importer import ToolIn
from digest.config import Settings
from digest.errors import ConfigError
from digest.http_urls import is_http_url
from digest.render.variant import http_url
from digest.web.pages import Pages
from tests.support.factories import tool_dict

GOOD = ["https://example.com", "http://example.com/a?b=c#d", "HTTPS://Example.com/x"]
BAD = [
    "",
    "javascript:alert(1)",
    "data:text/html,<b>x</b>",
    "ftp://example.com/file",
    "/relative/path",
    "example.com",
    "http://",
    "https:///no-host",
    'https://example.com/"onmouseover="x',
    "https://example.com/<script>",
    "https://exa mple.com",
    "https://example.com/\x00",
    "https://example.com/\x7f",
    "https://example.com/`",
    "https://[::1",
]


@pytest.mark.parametrize("url", GOOD)
def test_absolute_http_urls_with_a_host_pass(url: str) -> None:
    # http and https in any case, with a host, are links we may show.
    assert is_http_url(url)


@pytest.mark.parametrize("url", BAD)
def test_anything_else_fails_the_one_rule(url: str) -> None:
    # Other schemes, relative links, no host, and characters that could break out of an href.
    assert not is_http_url(url)


@pytest.mark.parametrize("url", BAD[1:])
def test_the_catalog_import_refuses_a_tool_whose_url_fails(url: str) -> None:
    # The importer keeps refusing the record (its caller lists it as a problem).
    with pytest.raises(ValidationError, match="must be an http\\(s\\) URL"):
        ToolIn.model_validate(tool_dict(url=url))


def test_the_catalog_import_keeps_a_good_url_trimmed_and_a_blank_one_as_none() -> None:
    # Surrounding spaces are trimmed before the check; "" means the tool has no link.
    assert ToolIn.model_validate(tool_dict(url="  https://example.com/x  ")).url == (
        "https://example.com/x"
    )
    assert ToolIn.model_validate(tool_dict(url="")).url is None


@pytest.mark.parametrize("url", BAD)
def test_the_email_renderer_drops_a_url_that_fails(url: str) -> None:
    # The template filter renders nothing for a bad link, and the link itself for a good one.
    assert http_url(url) == ""
    assert http_url(None) == ""
    assert http_url("https://example.com/x") == "https://example.com/x"


@pytest.mark.parametrize("site_url", ["javascript:alert(1)", "https://example.com/<x>"])
def test_a_bad_site_url_is_refused_at_start_and_the_pages_never_show_it(site_url: str) -> None:
    # The setting is refused with a sentence when the settings load; should a bad value reach
    # the pages all the same (settings built without validation), they link to "/" instead.
    with pytest.raises(ConfigError, match=r"DIGEST_SITE_URL=.* is not an http"):
        Settings.model_validate({"DIGEST_SITE_URL": site_url})
    unchecked = Settings.model_construct(site_url=site_url)
    assert Pages(unchecked).globals["site_url"] == "/"
    good = Settings.model_validate({"DIGEST_SITE_URL": "https://digest.example.com"})
    assert Pages(good).globals["site_url"] == "https://digest.example.com"
