"""`digest edit`: the editor's changes show in every preview, are checked with a sentence that
helps, change nothing when refused, pair the rest around a pin, and stop at the freeze."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import networkx as nx
import pytest

from digest.catalog.records import ToolRecord
from digest.config import Settings, get_settings
from digest.content.pairing import pair_tools, similarity_units
from digest.db import ensure_schema
from digest.editorial.edits import load_edits
from digest.run.preparation import Edition, prepare_digest, week_facts
from digest.weeks import IsoWeek
from tests.support.catalogs import tool as make_tool
from tests.support.cli import assert_user_error, run_digest
from tests.support.factories import tool_dict as make_tool_dict
from tests.support.factories import write_catalog, write_subscribers
from tests.support.scenario import WEEK, seed, week_tools

NOTE = "Big week for <b>coders</b> & friends.\nSee below.\n\nA second paragraph, %%name%% kept."


def _seeded(tmp_path: Path) -> dict[str, str]:
    env = {
        "DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"],
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
    }
    catalog = write_catalog(tmp_path / "catalog.json", week_tools())
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    people = write_subscribers(tmp_path / "people.csv", [{"email": "ada@example.com"}])
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0
    return env


def _preview_json(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    result = run_digest("preview", "--week", WEEK, "--format", "json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def _shown(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    result = run_digest("edit", "--week", WEEK, "--show", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_edits_through_the_cli_show_in_preview_json_html_and_text(tmp_path: Path) -> None:
    # Every kind of edit reaches the preview; the note is escaped in HTML and kept in both parts.
    env = _seeded(tmp_path)
    before = _preview_json(tmp_path, env)
    assert before["intro"] is None
    edit = run_digest(
        "edit", "--week", WEEK, "--intro", NOTE, "--subject", "Our pick: Llama against Scribe",
        "--pin", "code-llama-4:stackscribe", "--exclude", "patchpilot=Sponsored by its vendor",
        "--verdict", "code-llama-4:stackscribe=Llama for agents, Scribe for bugs",
        "--lead", "code-llama-4:stackscribe", "--by", "Ada Editor",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert edit.returncode == 0, edit.stderr
    after = _preview_json(tmp_path, env)
    assert after["intro"] == NOTE.strip()
    assert after["subject"] == "Our pick: Llama against Scribe"
    pairs = after["pairs"]
    assert isinstance(pairs, list)
    assert (pairs[0]["a"], pairs[0]["b"]) == ("code-llama-4", "stackscribe")
    assert pairs[0]["verdict"] == "Llama for agents, Scribe for bugs"
    assert {"slug": "patchpilot", "reason": "Sponsored by its vendor"} in after["excluded"]  # type: ignore[operator]
    assert all("patchpilot" not in (p["a"], p["b"]) for p in pairs)

    out = tmp_path / "p"
    written = run_digest("preview", "--week", WEEK, "--out", str(out), cwd=tmp_path, env=env)
    assert written.returncode == 0, written.stderr
    html = (out / f"digest-{WEEK}.html").read_text()
    text = (out / f"digest-{WEEK}.txt").read_text()
    assert "Big week for &lt;b&gt;coders&lt;/b&gt; &amp; friends.<br>See below.</p>" in html
    assert "<b>coders</b>" not in html
    assert html.index("Big week") < html.index("A second paragraph")
    assert "%%name%%" not in html and "%%name%%" not in text  # never a per-subscriber token
    assert "Big week for <b>coders</b> & friends.\nSee below.\n\nA second paragraph" in text
    assert "Llama for agents, Scribe for bugs" in html and "Our pick" in html

    shown = _shown(tmp_path, env)
    assert shown["intro"]["by"] == "Ada Editor" and shown["intro"]["at"]  # type: ignore[index]
    assert shown["frozen"] is False


def test_a_pin_is_kept_and_the_rest_stay_a_maximum_matching() -> None:
    # The pinned pair is in; among the other tools, the new-vs-new pairs still weigh the most.
    tags = [["a", "b"], ["a"], ["b", "c"], ["c"], ["a", "c"], ["d"], ["b", "d"], ["a", "d"]]
    new = [make_tool(f"t{i}", tags=tuple(tag)) for i, tag in enumerate(tags)]
    plain = pair_tools(new, [])
    pin = ("t0", "t5")
    assert frozenset(pin) not in {p.slugs for p in plain.pairs}
    pinned = pair_tools(new, [], pinned=[pin])
    assert frozenset(pin) in {p.slugs for p in pinned.pairs}
    rest = [p for p in pinned.pairs if p.slugs != frozenset(pin)]
    others = [t for t in new if t.slug not in pin]
    best = _heaviest_total(others)
    assert sum(similarity_units(p.a, p.b) for p in rest) == best
    assert len(rest) == len(others) // 2


def _heaviest_total(tools: list[ToolRecord]) -> int:
    graph = nx.Graph()
    for i, x in enumerate(tools):
        for y in tools[i + 1 :]:
            graph.add_edge(x.slug, y.slug, weight=similarity_units(x, y) + 1)
    matching = nx.max_weight_matching(graph)
    by_slug = {t.slug: t for t in tools}
    return sum(similarity_units(by_slug[a], by_slug[b]) for a, b in matching)


INVALID_EDITS = [
    (["--pin", "code-lama-4:stackscribe"], ["code-lama-4 is not a tool of", "code-llama-4"]),
    (["--pin", "code-llama-4:inkwell"], ["'Developer Tools'", "'Writing'", "one category"]),
    (["--pin", "termwise:tonetuner"], ["neither termwise nor tonetuner is new"]),
    (["--pin", "code-llama-4"], ["is not a pair", "joined by a colon"]),
    (["--exclude", "stackscrib=Old"], ["stackscrib is not a tool of", "stackscribe"]),
    (["--verdict", "inkwell:termwise=Nope"], ["is not a head-to-head", "pin it first"]),
    (["--verdict", "inkwell:tonetuner"], ["gives no verdict line"]),
    (["--lead", "inkwell:code-llama-4"], ["is not a head-to-head", "its pairs are"]),
    (["--subject", "x" * 90], ["at most 69"]),
    (["--intro", "bad \u202e text"], ["U+202E"]),
    (["--intro", "ok", "--pin", "code-llama-4:inkwell"], ["one category"]),
    (["--clear", "colour"], ["not a field that can be edited"]),
    (["--pin", "mistral-3-8b:patchpilot"], ["mistral-3-8b is excluded", "--clear exclude"]),
    (["--pin", "inkwell:pending-one"], ["not a tool of"]),
    (["--intro", ""], ["--intro is empty"]),
    (["--subject", ""], ["--subject is empty"]),
    (["--intro", "ok", "--by", "Ada\x1b[31m"], ["--by", "U+001B"]),
    (["--intro", "ok", "--by", "Ada \u202e"], ["--by", "U+202E"]),
    (["--intro", "ok", "--by", "Ada\nLovelace"], ["--by holds a line break"]),
    (["--intro", "ok", "--by", "Ada\tLovelace"], ["--by holds a tab"]),
    (["--intro", "ok", "--by", "A" * 10_000], ["--by is 10000 characters", "at most 100"]),
    (["--exclude", "StackScribe"], ["slugs are lowercase: stackscribe"]),
    (
        ["--exclude", "zzqqxx"],
        ["nor in the catalog", f"digest preview --week {WEEK} --format json"],
    ),
    (["--intro", "hi", "--clear", "intro"], ["--clear intro and --intro", "contradict"]),
    (["--clear", "pin", "colour"], ["'colour' is not a field"]),
]


def test_every_invalid_edit_gives_its_sentence_and_changes_nothing(tmp_path: Path) -> None:
    # A refused command stores none of its changes, not even the valid ones beside the bad one.
    env = _seeded(tmp_path)
    first = run_digest(
        "edit", "--week", WEEK, "--exclude", "mistral-3-8b", "--by", "Ada", cwd=tmp_path, env=env
    )
    assert first.returncode == 0, first.stderr
    before = _shown(tmp_path, env)
    for args, fragments in INVALID_EDITS:
        result = run_digest("edit", "--week", WEEK, *args, cwd=tmp_path, env=env)
        assert_user_error(result, *fragments)
        assert "Traceback" not in result.stderr
    assert _shown(tmp_path, env) == before


def test_edits_after_freezing_are_refused_and_the_frozen_content_holds_them(
    tmp_path: Path,
) -> None:
    # The run freezes content with the edits of that moment; later edits would reach nobody.
    env = _seeded(tmp_path)
    made = run_digest("edit", "--week", WEEK, "--intro", "Hello", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    prepared = prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None and prepared.content.intro == "Hello"
    refused = run_digest("edit", "--week", WEEK, "--intro", "Too late", cwd=tmp_path, env=env)
    assert_user_error(refused, "is frozen", "--refreeze")
    assert _preview_json(tmp_path, env)["intro"] == "Hello"
    assert _shown(tmp_path, env)["frozen"] is True


def test_a_pin_that_already_met_is_refused(tmp_path: Path) -> None:
    # Pins are remembered as match-ups: one already sent is not offered again.
    _seeded(tmp_path)
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    facts = week_facts(engine, Edition.from_settings(settings), IsoWeek.parse(WEEK))
    from dataclasses import replace

    from digest.editorial.applying import check_change
    from digest.editorial.edits import EditSet
    from digest.errors import EditError
    from digest.weeks import utcnow

    sent = replace(facts, history=frozenset({frozenset({"code-llama-4", "stackscribe"})}))
    empty = EditSet(week=WEEK)
    pinned = empty.with_edit(
        "pin", "code-llama-4:stackscribe", "code-llama-4:stackscribe", by="Ada", at=utcnow()
    )
    with pytest.raises(EditError, match="already met in an earlier digest"):
        check_change(sent, empty, pinned, site_url="http://127.0.0.1:8000", zone=settings.zone)


def test_a_pinned_pair_once_sent_is_a_match_up_on_record(tmp_path: Path) -> None:
    # Pins are remembered like any sent pair, so later weeks never repeat them.
    from sqlalchemy import insert, select

    from digest.delivery import ledger
    from digest.models import Delivery, Subscriber
    from digest.weeks import utcnow

    env = _seeded(tmp_path)
    pin = run_digest(
        "edit", "--week", WEEK, "--pin", "code-llama-4:termwise", cwd=tmp_path, env=env
    )
    assert pin.returncode == 0, pin.stderr
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    prepared = prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert {"code-llama-4", "termwise"} in [{p.a.slug, p.b.slug} for p in prepared.content.pairs]
    with engine.begin() as connection:
        person = connection.execute(select(Subscriber.id)).scalar_one()  # type: ignore[call-overload]
        connection.execute(
            insert(Delivery).values(
                digest_id=prepared.digest_id,
                subscriber_id=person,
                state="sent",
                updated_at=utcnow(),
            )
        )
    with engine.connect() as connection:
        history = ledger.previous_matchups(connection, before_week="2026-W48")
    assert frozenset({"code-llama-4", "termwise"}) in history


def test_an_edit_the_catalog_made_impossible_is_left_out_and_named(tmp_path: Path) -> None:
    # A later catalog change never breaks the week: the stale pin is skipped, --show names it,
    # and unrelated edits are still accepted.
    env = _seeded(tmp_path)
    made = run_digest(
        "edit", "--week", WEEK, "--pin", "code-llama-4:termwise", cwd=tmp_path, env=env
    )
    assert made.returncode == 0, made.stderr
    tools = [
        {**tool, "category": "Writing"} if tool["slug"] == "termwise" else tool
        for tool in week_tools()
    ]
    catalog = write_catalog(tmp_path / "moved.json", tools)
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    shown = _shown(tmp_path, env)
    (stale,) = shown["not_applied"]  # type: ignore[misc]
    assert "--pin code-llama-4:termwise" in stale and "one category" in stale
    pairs = _preview_json(tmp_path, env)["pairs"]
    assert all({p["a"], p["b"]} != {"code-llama-4", "termwise"} for p in pairs)  # type: ignore[attr-defined]
    other = run_digest("edit", "--week", WEEK, "--intro", "Still fine", cwd=tmp_path, env=env)
    assert other.returncode == 0, other.stderr


def test_every_variant_carries_the_editors_subject_and_note(tmp_path: Path) -> None:
    # A Writing-only reader gets the subject and the note the editor wrote, not a recomposed one.
    from digest.content.compose import filter_for_categories
    from digest.run.preparation import render_for_categories

    env = _seeded(tmp_path)
    made = run_digest("edit", "--week", WEEK, "--subject", "Editor's choice", "--intro", "Hi all",
                      cwd=tmp_path, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    content = prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=False).content
    writing = filter_for_categories(content, ["Writing"])
    assert writing is not None and writing.subject == "Editor's choice"
    assert [p.category for p in writing.pairs] == ["Writing"]
    rendered = render_for_categories(edition, content, ["Writing"])
    assert rendered is not None and rendered.subject == "Editor's choice"
    assert "Hi all" in rendered.text and "Hi all" in rendered.html


def test_a_slug_of_another_week_is_named_with_its_week(tmp_path: Path) -> None:
    # A slug the catalog has, added in another week, is said to be there, not "closest" guesses.
    env = _seeded(tmp_path)
    later = make_tool_dict("nextweek-tool", added_at="2026-11-25T10:00:00Z")
    catalog = write_catalog(tmp_path / "more.json", [*week_tools(), later])
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    result = run_digest("edit", "--week", WEEK, "--exclude", "nextweek-tool", cwd=tmp_path, env=env)
    assert_user_error(result, f"nextweek-tool was added in 2026-W48, not in {WEEK}")
    assert "closest" not in result.stderr


def test_pinning_an_earlier_tool_without_reviews_says_it_has_none(tmp_path: Path) -> None:
    # An earlier week's tool can be pinned when reviewed; one without reviews was said to be
    # "added in another week, not a tool of it", which reviewed ones of that week disprove.
    env = _seeded(tmp_path)
    earlier = make_tool_dict("bare-tool", added_at="2026-11-10T10:00:00Z", reviews=[])
    catalog = write_catalog(tmp_path / "more.json", [*week_tools(), earlier])
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    result = run_digest(
        "edit", "--week", WEEK, "--pin", "bare-tool:code-llama-4", cwd=tmp_path, env=env
    )
    assert_user_error(result, "bare-tool has no panel reviews yet")
    assert "was added in" not in result.stderr


def test_excluding_a_pinned_tool_blames_the_exclusion_and_suggests_clearing_the_pin(
    tmp_path: Path,
) -> None:
    # The pin came first: the sentence names it and --clear pin, not the exclusion just typed.
    env = _seeded(tmp_path)
    pinned = run_digest(
        "edit", "--week", WEEK, "--pin", "code-llama-4:termwise", cwd=tmp_path, env=env
    )
    assert pinned.returncode == 0, pinned.stderr
    result = run_digest(
        "edit", "--week", WEEK, "--exclude", "code-llama-4=x", cwd=tmp_path, env=env
    )
    assert_user_error(result, "code-llama-4 is pinned in code-llama-4:termwise", "--clear pin")
    assert "--clear exclude" not in result.stderr


def test_clearing_a_pin_its_verdict_and_lead_hold_names_them_not_pin_it_first(
    tmp_path: Path,
) -> None:
    # The editor is removing the pin: the sentence says which edits hold it and how to clear
    # them with it, never "pin it first"; clearing all three at once works.
    env = _seeded(tmp_path)
    pair = "code-llama-4:termwise"
    made = run_digest(
        "edit", "--week", WEEK, "--pin", pair, "--verdict", f"{pair}=Both fine",
        "--lead", pair, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = run_digest("edit", "--week", WEEK, "--clear", "pin", cwd=tmp_path, env=env)
    assert_user_error(
        result, f"--clear pin: {pair} has --verdict and --lead edits", "--clear pin verdict lead"
    )
    assert "pin it first" not in result.stderr
    together = ["--clear", "pin", "verdict", "lead"]
    cleared = run_digest("edit", "--week", WEEK, *together, cwd=tmp_path, env=env)
    assert cleared.returncode == 0, cleared.stderr
    shown = _shown(tmp_path, env)
    assert shown["pins"] == [] and shown["lead"] is None


def test_excluding_a_tool_an_earlier_verdict_or_lead_names_blames_the_exclusion(
    tmp_path: Path,
) -> None:
    # The verdict and lead were set before: the sentence names the exclusion and --clear, never
    # "pin it first" (that pin would clash with the exclusion); clearing with it works.
    env = _seeded(tmp_path)
    preview = run_digest("preview", "--week", WEEK, "--format", "json", cwd=tmp_path, env=env)
    first = json.loads(preview.stdout)["pairs"][0]
    pair = f"{first['a']}:{first['b']}"
    made = run_digest(
        "edit", "--week", WEEK, "--verdict", f"{pair}=Both fine", "--lead", pair,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    exclude = ["--exclude", f"{first['a']}=Sponsored"]
    result = run_digest("edit", "--week", WEEK, *exclude, cwd=tmp_path, env=env)
    assert_user_error(result, f"--exclude {first['a']}: the --verdict edit", "--clear verdict")
    assert "pin it first" not in result.stderr
    clearing = ["--clear", "verdict", "lead"]
    cleared = run_digest("edit", "--week", WEEK, *clearing, *exclude, cwd=tmp_path, env=env)
    assert cleared.returncode == 0, cleared.stderr
    excluded = _shown(tmp_path, env)["excluded"]
    assert [e["slug"] for e in excluded] == [first["a"]]  # type: ignore[attr-defined]


def test_a_bare_clear_with_another_option_is_refused_and_keeps_every_edit(
    tmp_path: Path,
) -> None:
    # `--clear --subject x` read as "remove everything, then set x": every other edit went
    # without a word. Refused, naming both ways to say it.
    env = _seeded(tmp_path)
    made = run_digest(
        "edit", "--week", WEEK, "--intro", "Hi", "--pin", "code-llama-4:termwise",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    both = ["--clear", "--subject", "x"]
    result = run_digest("edit", "--week", WEEK, *both, cwd=tmp_path, env=env)
    assert_user_error(result, "--clear alone removes every edit", "--subject", "second command")
    shown = _shown(tmp_path, env)
    assert shown["intro"] is not None and shown["pins"] and shown["subject"] is None


def test_excluding_every_new_tool_says_the_edits_did_it(tmp_path: Path) -> None:
    # "has no new tools" blamed the catalog; the week has them, and the edits left each out.
    env = _seeded(tmp_path)
    excludes = [arg for slug in (t["slug"] for t in week_tools()) for arg in ("--exclude", slug)]
    result = run_digest("edit", "--week", WEEK, *excludes, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert f"the edits exclude every new tool of {WEEK}" in said and "--clear exclude" in said
    assert "has no new tools" not in said


def test_clear_takes_several_fields_at_once_or_repeated(tmp_path: Path) -> None:
    # `--clear pin intro` and `--clear pin --clear intro` both remove exactly those fields.
    env = _seeded(tmp_path)
    for clearing in (["--clear", "pin", "intro"], ["--clear", "pin", "--clear", "intro"]):
        made = run_digest(
            "edit", "--week", WEEK, "--intro", "Hi", "--subject", "Kept",
            "--pin", "code-llama-4:termwise", cwd=tmp_path, env=env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        cleared = run_digest("edit", "--week", WEEK, *clearing, cwd=tmp_path, env=env)
        assert cleared.returncode == 0, cleared.stderr
        shown = _shown(tmp_path, env)
        assert shown["intro"] is None and shown["pins"] == []
        assert shown["subject"]["text"] == "Kept"  # type: ignore[index]
    everything = run_digest("edit", "--week", WEEK, "--clear", cwd=tmp_path, env=env)
    assert everything.returncode == 0, everything.stderr
    assert _shown(tmp_path, env)["subject"] is None


def test_editors_at_once_lose_no_edit(settings: Settings, tmp_path: Path) -> None:
    # Six edits of one week from six threads at the same moment: each is stored onto the
    # others (one that read the edits before another landed is checked again), none is lost.
    from digest.db import get_engine
    from digest.run.editing import EditRequest, edit_week
    from digest.weeks import utcnow

    seed(settings, tmp_path)
    engine = get_engine(settings.database_url)
    edition, week = Edition.from_settings(settings), IsoWeek.parse(WEEK)
    requests = [
        EditRequest(by="ana", intro="Hello"),
        EditRequest(by="ben", subject="Our subject"),
        *(
            EditRequest(by=f"e{i}", excludes=[f"{slug}=R{i}"])
            for i, slug in enumerate(["patchpilot", "inkwell", "tonetuner", "stackscribe"])
        ),
    ]
    barrier = threading.Barrier(len(requests))
    errors: list[BaseException] = []

    def edit(request: EditRequest) -> None:
        barrier.wait()
        try:
            edit_week(engine, edition, week, request, now=utcnow())
        except BaseException as exc:  # pragma: no cover - reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=edit, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        stored = load_edits(connection, WEEK)
    assert stored.intro == "Hello" and stored.subject == "Our subject"
    assert set(stored.excluded) == {"patchpilot", "inkwell", "tonetuner", "stackscribe"}
