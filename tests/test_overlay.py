"""The live overlay in headless Chromium against a real server: the URL ``livegifts overlay-url``
prints opens a page that shows gifts, combos and top gifters as they are sent over HTTP, and says
plainly what is wrong with a missing token, an unknown session or a refused token.

Chromium is the system one (``/usr/bin/chromium``, or ``LIVEGIFTS_CHROMIUM``), driven by
Playwright; without it these tests are skipped, and under ``CI`` they fail.
``LIVEGIFTS_OVERLAY_SCREENSHOT=docs/overlay.png pytest tests/test_overlay.py`` also saves the
screenshot of the combo test, for the documentation.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import async_playwright, expect

from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, token
from tests.test_cli import livegifts
from tests.test_http_gifting import END, JOIN, SEND, buy_coins, gift_ids, go_live, send_input

CHROMIUM = os.environ.get("LIVEGIFTS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("LIVEGIFTS_OVERLAY_SCREENSHOT")
UNKNOWN_SESSION = "TGl2ZVNlc3Npb246OTk5OQ=="  # LiveSession:9999
WATCHER = token("overlay-watcher", "viewer")

expect.set_options(timeout=30_000)  # a loaded machine may be slow; the page gets there or fails


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(chromium, request, tmp_path_factory):
    url = fresh_database("sqlite", request, tmp_path_factory.mktemp("overlay"))
    process = ServerProcess(url, LIVEGIFTS_COMBO_WINDOW_SECONDS="5",
                            LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def open_overlay(chromium, server):
    """Opens a URL (a path: on the module's server) in a fresh headless Chromium; yields (page,
    requests made to anywhere but that server, which are refused). The page must raise no
    script error and break none of its Content-Security-Policy."""

    @contextlib.asynccontextmanager
    async def opened(url: str, fake_clock: bool = False):
        if url.startswith("/"):
            url = f"http://127.0.0.1:{server.port}{url}"
        async with only_from_its_server(chromium, url, fake_clock=fake_clock) as found:
            yield found

    return opened


@contextlib.asynccontextmanager
async def only_from_its_server(chromium: str, url: str, width: int = 1280, height: int = 720,
                               fake_clock: bool = False):
    """``url`` opened in a fresh headless Chromium where every request to another host is
    refused (with the page's clock under the test's control if ``fake_clock``); yields (page,
    the refused requests). The page must raise no script error and break none of its
    Content-Security-Policy."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    elsewhere: list[str] = []
    script_errors: list[str] = []

    async def only_the_server(route) -> None:
        if route.request.url.startswith(origin + "/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            page.on("console", lambda message: script_errors.append(message.text)
                    if "Content Security Policy" in message.text else None)
            await page.route("**/*", only_the_server)
            if fake_clock:
                await page.clock.install()
            await page.goto(url)
            yield page, elsewhere
        finally:
            await browser.close()
    assert script_errors == [], script_errors


def gift_card(page, sender: str):
    return page.locator(".gift").filter(has=page.locator(".sender", has_text=re.compile(
        f"^{re.escape(sender)}$")))


async def test_the_printed_url_shows_gifts_and_top_gifters_as_they_are_sent(
        gql, server, open_overlay):
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("luna", "creator"))
    aurora, kenji = token("aurora"), token("kenji")
    await buy_coins(gql, aurora, "coins-700")
    await buy_coins(gql, kenji, "coins-700")
    await gql(SEND, send_input(session_id, gifts["perfume"], 5), token=aurora)  # before opening

    printed = livegifts(server.database_url, "overlay-url", session_id,
                        "--base-url", f"http://127.0.0.1:{server.port}")
    assert printed.returncode == 0, printed.stderr
    async with open_overlay(printed.stdout.strip()) as (page, elsewhere):
        await expect(page.locator("body")).to_have_attribute("data-state", "live")
        top = page.locator("#top-gifters-list li")
        await expect(top).to_have_text([re.compile(r"^1\s*aurora\s*100 coins$")])

        await gql(JOIN, {"id": session_id}, token=kenji)
        await expect(page.locator("#viewers")).to_have_text("1 watching")
        await gql(SEND, send_input(session_id, gifts["doughnut"], 7), token=kenji)
        card = gift_card(page, "kenji")
        await expect(card.locator(".gift-name")).to_have_text("sent Doughnut")
        await expect(card.locator(".count")).to_have_text("\u00d77")
        await expect(card.locator(".combo-label")).to_have_text("")
        # The gift's picture, from this server (shown once it has loaded).
        await expect(card.locator(".gift-icon img")).to_have_attribute(
            "src", re.compile(r"^http://127\.0\.0\.1:\d+/static/gifts/doughnut\.svg$"))
        await expect(top).to_have_text([re.compile(r"^1\s*kenji\s*210 coins$"),
                                        re.compile(r"^2\s*aurora\s*100 coins$")])
        await expect(page.locator("#message")).to_be_hidden()
    # Everything, the gifts' pictures included, comes from the server: it works offline.
    assert elsewhere == []


async def test_a_combo_shows_its_running_count_then_its_total(gql, server, open_overlay):
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("nova", "creator"))
    fans = {"maya": "coins-350", "sofia": "coins-1400", "noah": "coins-700"}
    for name, package in fans.items():
        await buy_coins(gql, token(name), package)
    async with open_overlay(f"/overlay/{session_id}#token={WATCHER}") as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "live")
        for name in fans:
            await gql(JOIN, {"id": session_id}, token=token(name))
        await expect(page.locator("#viewers")).to_have_text("3 watching")

        combo = gift_card(page, "maya")
        for quantity, running in [(1, "\u00d71"), (2, "\u00d73"), (3, "\u00d76")]:
            await gql(SEND, send_input(session_id, gifts["rose"], quantity), token=token("maya"))
            await expect(combo.locator(".count")).to_have_text(running)
        await expect(combo).to_have_count(1)  # one card for the whole combo
        await expect(combo.locator(".combo-label")).to_have_text("combo")

        await gql(SEND, send_input(session_id, gifts["galaxy"]), token=token("sofia"))
        await gql(SEND, send_input(session_id, gifts["corgi"], 2), token=token("noah"))
        await expect(page.locator(".gift .sender")).to_have_text(["noah", "sofia", "maya"])
        await expect(page.locator("#top-gifters-list .name")).to_have_text(
            ["sofia", "noah", "maya"])
        if SCREENSHOT:
            await save_screenshot(page, Path(SCREENSHOT))

        # The server ends the combo once its window passes: the card shows the total.
        await expect(combo).to_have_class(re.compile(r"\bended\b"))
        await expect(combo.locator(".count")).to_have_text("\u00d76")
        await expect(combo.locator(".combo-label")).to_have_text("3 sends")


GOAL = """mutation($input: SetLiveGoalInput!) { setLiveGoal(input: $input) {
  goal { id } userErrors { code } } }"""


async def test_goals_show_as_bars_that_fill_and_turn_gold_when_reached(gql, server,
                                                                       open_overlay):
    """A goal set before the page opened is read with the session; one set after arrives as
    an event; gifts fill both bars; the reached one is marked reached."""
    gifts = await gift_ids(gql)
    creator = token("vera", "creator")
    session_id = await go_live(gql, creator)
    fan = token("theo")
    await buy_coins(gql, fan, "coins-350")
    await gql(GOAL, {"input": {"sessionId": session_id, "title": "Five roses",
                               "kind": "GIFT_COUNT", "target": 5, "giftId": gifts["rose"]}},
              token=creator)
    await gql(SEND, send_input(session_id, gifts["rose"], 2), token=fan)  # before opening
    async with open_overlay(f"/overlay/{session_id}#token={WATCHER}") as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "live")
        roses = page.locator(".goal").filter(has_text="Five roses")
        await expect(roses.locator(".goal-count")).to_have_text("2 / 5")
        await gql(GOAL, {"input": {"sessionId": session_id, "title": "A hundred coins",
                                   "kind": "COINS", "target": 100}}, token=creator)
        coins = page.locator(".goal").filter(has_text="A hundred coins")
        await expect(coins.locator(".goal-count")).to_have_text("0 / 100")
        await gql(SEND, send_input(session_id, gifts["rose"], 3), token=fan)
        await expect(roses.locator(".goal-count")).to_have_text("5 / 5")
        await expect(roses).to_have_class(re.compile(r"\breached\b"))
        await expect(coins.locator(".goal-count")).to_have_text("3 / 100")
        await expect(coins).not_to_have_class(re.compile(r"\breached\b"))
        assert await roses.locator("progress").evaluate("bar => [bar.value, bar.max]") == [5, 5]
        await expect(page.locator(".goal .goal-title")).to_have_text(
            ["Five roses", "A hundred coins"])


MATCH_INVITE = """mutation($input: InviteToMatchInput!) { inviteToMatch(input: $input) {
  match { id } userErrors { code } } }"""
MATCH_ACCEPT = """mutation($input: MatchInput!) { acceptMatch(input: $input) {
  match { endsAt } userErrors { code } } }"""


async def test_a_match_shows_both_scores_a_countdown_and_the_result(gql, server, open_overlay):
    """A match accepted after the page opened: both names and scores, this session's side on
    the left, follow the gifts into either session; the countdown, on the page's clock moved
    by the test, reads 1:30 ninety seconds before the end, 1:29 a second later and 0:00 after
    the end; ending the other creator's session ends the match, shown as this side's
    victory."""
    gifts = await gift_ids(gql)
    ours, theirs = token("mila", "creator"), token("omar", "creator")
    our_session, their_session = await go_live(gql, ours), await go_live(gql, theirs)
    fan = token("ines")
    await buy_coins(gql, fan, "coins-350")
    async with open_overlay(f"/overlay/{our_session}#token={WATCHER}",
                            fake_clock=True) as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "live")
        invited = await gql(MATCH_INVITE, {"input": {
            "sessionId": their_session, "opponentSessionId": our_session,
            "durationSeconds": 120}}, token=theirs)  # they invite; this session's side: right
        match_id = invited["data"]["inviteToMatch"]["match"]["id"]
        accepted = await gql(MATCH_ACCEPT, {"input": {"matchId": match_id}}, token=ours)
        ends_at = datetime.fromisoformat(accepted["data"]["acceptMatch"]["match"]["endsAt"])
        panel = page.locator("#match")
        await expect(panel).to_be_visible()
        await expect(page.locator("#match-us-name")).to_have_text("mila")
        await expect(page.locator("#match-them-name")).to_have_text("omar")
        await gql(SEND, send_input(our_session, gifts["doughnut"]), token=fan)
        await gql(SEND, send_input(their_session, gifts["rose"], 5), token=fan)
        await expect(page.locator("#match-us-score")).to_have_text("30")
        await expect(page.locator("#match-them-score")).to_have_text("5")
        await page.clock.pause_at(ends_at - timedelta(seconds=91))
        await page.clock.run_for(1000)
        await expect(page.locator("#match-clock")).to_have_text("1:30")
        await page.clock.run_for(1000)
        await expect(page.locator("#match-clock")).to_have_text("1:29")
        await page.clock.fast_forward("02:00")
        await expect(page.locator("#match-clock")).to_have_text("0:00")
        await gql(END, {"id": their_session}, token=theirs)
        await expect(page.locator("#match-result")).to_have_text("Victory!")
        await expect(page.locator("#match-us-score")).to_have_text("30")


async def save_screenshot(page, path: Path) -> None:
    # The overlay is transparent; a dark backdrop stands in for the stream behind it.
    await page.evaluate("document.body.style.background = "
                        "'linear-gradient(135deg, #1d2b53 0%, #3b1f4a 55%, #0f3d3e 100%)'")
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), animations="disabled")


async def test_the_end_of_the_session_is_shown(gql, server, open_overlay):
    gifts = await gift_ids(gql)
    creator = token("iris", "creator")
    session_id = await go_live(gql, creator)
    theo = token("theo")
    await buy_coins(gql, theo, "coins-70")
    async with open_overlay(f"/overlay/{session_id}#token={WATCHER}") as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "live")
        await gql(SEND, send_input(session_id, gifts["perfume"]), token=theo)
        await expect(gift_card(page, "theo").locator(".count")).to_have_text("\u00d71")
        await expect(page.locator("#viewers")).to_be_visible()
        await gql(END, {"id": session_id}, token=creator)
        await expect(page.locator("body")).to_have_attribute("data-state", "ended")
        await expect(page.locator("#message")).to_have_text(
            "The live session has ended. 1 gift, 20 coins.")
        await expect(page.locator("#viewers")).to_be_hidden()
    async with open_overlay(f"/overlay/{session_id}#token={WATCHER}") as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "ended")
        await expect(page.locator("#message")).to_have_text("The live session has ended.")


async def test_the_page_reconnects_after_a_server_restart(chromium, request, tmp_path,
                                                          open_overlay):
    restarted = ServerProcess(fresh_database("sqlite", request, tmp_path),
                              LIVEGIFTS_SEED_DEMO_DATA="true")
    restarted.start()
    try:
        gql = GraphQLClient(restarted.url)
        gifts = await gift_ids(gql)
        session_id = await go_live(gql, token("vera", "creator"))
        await buy_coins(gql, token("olga"), "coins-70")
        async with open_overlay(f"http://127.0.0.1:{restarted.port}/overlay/{session_id}"
                                f"#token={WATCHER}") as (page, _):
            await expect(page.locator("body")).to_have_attribute("data-state", "live")
            restarted.stop()
            await expect(page.locator("#message")).to_have_text(
                "Connection lost: reconnecting\u2026")
            restarted.start()
            await expect(page.locator("body")).to_have_attribute("data-state", "live")
            await expect(page.locator("#message")).to_be_hidden()
            await gql(SEND, send_input(session_id, gifts["finger-heart"], 3), token=token("olga"))
            await expect(gift_card(page, "olga").locator(".count")).to_have_text("\u00d73")
            await expect(page.locator("#top-gifters-list .name")).to_have_text(["olga"])
        await gql.close()
    finally:
        restarted.stop()


async def test_the_page_shows_running_combos_and_misses_nothing_while_away(
        chromium, request, tmp_path, open_overlay, sqlite_template):
    """Opened mid-combo, the page shows the combo's card; after its server stops, gifts sent
    meanwhile (through another server on the same database) appear once it is back."""
    url = fresh_database("sqlite", request, tmp_path)
    window = {"LIVEGIFTS_COMBO_WINDOW_SECONDS": "600"}
    first = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true", **window)
    first.start()
    try:
        gql = GraphQLClient(first.url)
        gifts = await gift_ids(gql)
        session_id = await go_live(gql, token("mira", "creator"))
        ines, omar = token("ines"), token("omar")
        await buy_coins(gql, ines, "coins-700")
        await buy_coins(gql, omar, "coins-700")
        for _ in range(2):
            await gql(SEND, send_input(session_id, gifts["rose"], 2), token=ines)
        await gql.close()
        async with open_overlay(f"http://127.0.0.1:{first.port}/overlay/{session_id}"
                                f"#token={WATCHER}") as (page, _):
            await expect(page.locator("body")).to_have_attribute("data-state", "live")
            await expect(gift_card(page, "ines").locator(".count")).to_have_text("\u00d74")
            first.stop()
            await expect(page.locator("#message")).to_have_text(
                "Connection lost: reconnecting\u2026")
            other = ServerProcess(url, **window)
            other.start()
            try:
                away = GraphQLClient(other.url)
                await away(SEND, send_input(session_id, gifts["rose"], 3), token=ines)
                await away(SEND, send_input(session_id, gifts["doughnut"], 1), token=omar)
                await away.close()
            finally:
                other.stop()
            first.start()
            await expect(gift_card(page, "ines").locator(".count")).to_have_text("\u00d77")
            await expect(gift_card(page, "omar").locator(".gift-name")).to_have_text(
                "sent Doughnut")
            await expect(page.locator(".gift")).to_have_count(2)
    finally:
        first.stop()


@pytest.mark.parametrize("path, message", [
    (f"/overlay/{UNKNOWN_SESSION}",
     "This overlay needs a token: open it as /overlay/<session id>#token=<token>. "
     "'livegifts overlay-url <session id>' prints the full URL."),
    (f"/overlay/{UNKNOWN_SESSION}#token={WATCHER}",
     "Live events refused: No live session has this ID."),
    (f"/overlay/not-a-session#token={WATCHER}",
     "Live events refused: sessionId is not a valid LiveSession ID."),
    (f"/overlay/{UNKNOWN_SESSION}#token="
     f"{token('overlay-watcher', secret='another-secret-0123456789abcdef0123456789')}",
     "Live events refused: Invalid bearer token: its signature does not match: it was not "
     "issued for this server."),
], ids=["no token", "unknown session", "not a session id", "token signed by someone else"])
async def test_the_page_says_what_is_wrong(open_overlay, path, message):
    async with open_overlay(path) as (page, _):
        await expect(page.locator("body")).to_have_attribute("data-state", "error")
        await expect(page.locator("#message")).to_have_text(message)
        await expect(page.locator("#message")).to_be_visible()
