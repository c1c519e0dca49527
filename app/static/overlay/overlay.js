// The livegifts live overlay: the gifts, combos, viewers, top gifters, goals and match of one
// live session.
//
// The session id is the last path segment (/overlay/<session id>); the token comes from the URL
// fragment (#token=...), which browsers never send to the server. Events arrive over
// graphql-transport-ws (the vendored graphql-ws client). On first load the top gifters and the
// combos already running are loaded over HTTP; after that every change arrives as an event.
// Each event carries its cursor: after a dropped connection or a server restart the page
// resumes after the last event it showed, so it misses nothing and shows nothing twice.
// <body data-state> is "connecting", "live", "ended" or "error", for scripts that drive the page.
"use strict";

(() => {
  const FEED_SIZE = 5; // gift cards on screen at once; the oldest leaves first
  const LINGER_MS = 12000; // how long a finished combo stays on screen
  const TOP_GIFTERS = 3; // TopGiftersChanged carries the top three

  const EVENTS = `subscription($sessionId: ID!, $after: String) {
    liveSessionEvents(sessionId: $sessionId, after: $after) {
    __typename
    ... on LiveEvent { cursor }
    ... on GiftSent { sender { name } gift { name imageUrl } quantity comboId comboCount }
    ... on ComboEnded { comboId totalCount sends }
    ... on ViewerCountChanged { viewers }
    ... on TopGiftersChanged { top { rank user { name } coins } }
    ... on GoalProgress { goalId title target progress }
    ... on GoalReached { goalId title target progress }
    ... on MatchStarted { matchId endsAt sides { creator { name } sessionId score } }
    ... on MatchScore { matchId endsAt sides { creator { name } sessionId score } }
    ... on MatchEnded { matchId tie winner { name } sides { creator { name } sessionId score } }
    ... on SessionEnded { totals { gifts coins } } } }`;
  const SESSION_QUERY = `query($id: ID!) { liveSession(id: $id) {
    topGifters(first: ${TOP_GIFTERS}) { edges { node { rank user { name } coins } } }
    runningCombos(first: ${FEED_SIZE}) {
      comboId sender { name } gift { name imageUrl } count sends }
    goals { id title target progress status }
    match { id status endsAt tie winner { name }
      inviter { creator { name } score session { id } }
      invitee { creator { name } score session { id } } } } }`;

  const byId = (id) => document.getElementById(id);
  const segments = location.pathname.split("/").filter(Boolean);
  const sessionId = decodeURIComponent(segments[segments.length - 1] || "");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const numbers = new Intl.NumberFormat("en");
  const cards = new Map(); // comboId -> the gift card showing that combo
  const MATCH_RESULT_MS = 15000; // how long a match's result stays on screen
  let match = null; // the match on screen: { id, endsAt (ms), scores: [us, them], ended }
  let matchTimer = null;

  let state = "connecting";
  let client = null;
  // The subscription's variables; graphql-ws sends the same object again on every
  // reconnection, so "after" always holds the cursor of the last event shown.
  const variables = { sessionId };
  let freshStart = false; // load the session's state when the first event (the opening) comes
  let eventsArrived = false; // an event arrived while that query was in flight

  function setState(next) {
    state = next;
    document.body.dataset.state = next;
  }

  function showMessage(text, kind) {
    const message = byId("message");
    message.textContent = text;
    message.className = `message ${kind}`;
    message.hidden = false;
  }

  function clearNotice() {
    const message = byId("message");
    if (message.classList.contains("notice")) message.hidden = true;
  }

  function fail(text) {
    setState("error");
    showMessage(text, "error");
    if (client) client.dispose();
  }

  function describe(error) {
    if (Array.isArray(error)) return error.map((e) => e.message).join(" ");
    if (error && typeof error === "object" && "code" in error && "reason" in error) {
      return error.reason || `the connection closed with code ${error.code}.`;
    }
    if (error instanceof Event) return "the connection to the server failed.";
    return (error && error.message) || String(error);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function counted(count, noun) {
    return `${numbers.format(count)} ${noun}${count === 1 ? "" : "s"}`;
  }

  function renderTopGifters(entries) {
    const list = byId("top-gifters-list");
    list.replaceChildren(...entries.slice(0, TOP_GIFTERS).map((entry) => {
      const item = element("li");
      item.append(element("span", "rank", String(entry.rank)),
                  element("span", "name", entry.user.name),
                  element("span", "coins", counted(entry.coins, "coin")));
      return item;
    }));
    byId("top-gifters").hidden = entries.length === 0;
  }

  // A goal's bar: progress only ever grows, so the larger of two reports is the newer one
  // (the session's state read on opening may arrive after the first events).
  function showGoal(goal) {
    const list = byId("goal-list");
    let item = list.querySelector(`[data-goal-id="${CSS.escape(goal.id)}"]`);
    if (!item) {
      item = element("li", "goal");
      item.dataset.goalId = goal.id;
      item.dataset.progress = "-1";
      const bar = element("progress", "goal-bar");
      item.append(element("span", "goal-title"), bar, element("span", "goal-count"));
      list.append(item);
    }
    if (goal.progress < Number(item.dataset.progress)) return;
    item.dataset.progress = String(goal.progress);
    item.querySelector(".goal-title").textContent = goal.title;
    const bar = item.querySelector(".goal-bar");
    bar.max = goal.target;
    bar.value = Math.min(goal.progress, goal.target);
    bar.setAttribute("aria-label", goal.title);
    item.querySelector(".goal-count").textContent =
      `${numbers.format(goal.progress)} / ${numbers.format(goal.target)}`;
    if (goal.reached) item.classList.add("reached");
    byId("goals").hidden = false;
  }

  // The match panel: this session's side on the left. Scores only ever grow, so the larger
  // of two reports is the newer one (an event and the first load may cross).
  function showMatch(id, endsAt, sides, result) {
    const ours = sides.findIndex((side) => side.sessionId === sessionId);
    const [us, them] = ours === 1 ? [sides[1], sides[0]] : [sides[0], sides[1]];
    if (!match || match.id !== id) {
      match = { id, endsAt: Date.parse(endsAt), scores: [0, 0], ended: false };
    }
    if (match.ended && !result) return;
    match.scores = [Math.max(match.scores[0], us.score), Math.max(match.scores[1], them.score)];
    byId("match-us-name").textContent = us.creator.name;
    byId("match-them-name").textContent = them.creator.name;
    byId("match-us-score").textContent = numbers.format(match.scores[0]);
    byId("match-them-score").textContent = numbers.format(match.scores[1]);
    const total = match.scores[0] + match.scores[1];
    byId("match-bar-us").style.width = `${total ? (100 * match.scores[0]) / total : 50}%`;
    const panel = byId("match");
    panel.hidden = false;
    if (result) {
      match.ended = true;
      clearInterval(matchTimer);
      byId("match-clock").textContent = "";
      byId("match-result").textContent = result.tie ? "Tie!"
        : result.winner && result.winner.name === us.creator.name ? "Victory!"
        : `${result.winner ? result.winner.name : ""} wins`;
      panel.classList.add("ended");
      const shown = match.id;
      setTimeout(() => { if (match && match.id === shown) panel.hidden = true; }, MATCH_RESULT_MS);
      return;
    }
    panel.classList.remove("ended");
    byId("match-result").textContent = "";
    clearInterval(matchTimer);
    tick();
    matchTimer = setInterval(tick, 250);
  }

  // The countdown: whole seconds left, rounded up (it reads 2:00 as a two-minute match starts).
  function tick() {
    const left = Math.max(0, Math.ceil((match.endsAt - Date.now()) / 1000));
    byId("match-clock").textContent =
      `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    if (!left) clearInterval(matchTimer);
  }

  function matchEvent(event) {
    showMatch(event.matchId, event.endsAt, event.sides,
              event.__typename === "MatchEnded" ? event : null);
  }

  async function loadSession() {
    eventsArrived = false;
    let body;
    try {
      const response = await fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: SESSION_QUERY, variables: { id: sessionId } }),
      });
      body = await response.json();
    } catch (error) {
      return; // the next events fill the page in
    }
    if (body.errors) {
      fail(`The live session could not be read: ${describe(body.errors)}`);
      return;
    }
    const found = body.data.liveSession;
    if (!found) return;
    // Combos running before the page opened: their next events find the cards.
    for (const combo of found.runningCombos.slice().reverse()) {
      if (cards.has(combo.comboId)) continue;
      showCount(addCard(combo), combo.count, combo.sends > 1 ? "combo" : "");
    }
    if (!eventsArrived) {
      renderTopGifters(found.topGifters.edges.map((edge) => edge.node));
    }
    for (const goal of found.goals) {
      if (goal.status !== "MISSED") showGoal({ ...goal, reached: goal.status === "REACHED" });
    }
    const running = found.match;
    if (running && running.status === "RUNNING" && !(match && match.id === running.id)) {
      showMatch(running.id, running.endsAt, [running.inviter, running.invitee].map((side) => (
        { creator: side.creator, sessionId: side.session.id, score: side.score })), null);
    }
  }

  function giftIcon(gift) {
    const icon = element("span", "gift-icon", gift.name.slice(0, 1).toUpperCase());
    const image = new Image();
    image.alt = "";
    // Show the picture only once it has loaded: an unreachable image keeps the initial.
    image.addEventListener("load", () => icon.replaceChildren(image));
    image.src = gift.imageUrl;
    return icon;
  }

  function addCard(event) {
    const card = element("li", "gift");
    card.dataset.comboId = event.comboId;
    const text = element("span", "gift-text");
    text.append(element("span", "sender", event.sender.name),
                element("span", "gift-name", `sent ${event.gift.name}`));
    card.append(giftIcon(event.gift), text, element("span", "count"),
                element("span", "combo-label"));
    byId("gift-feed").prepend(card);
    cards.set(event.comboId, card);
    while (cards.size > FEED_SIZE) removeCard(cards.keys().next().value);
    return card;
  }

  function removeCard(comboId) {
    const card = cards.get(comboId);
    if (!card) return;
    cards.delete(comboId);
    card.classList.add("leaving");
    setTimeout(() => card.remove(), 800);
  }

  function showCount(card, count, label) {
    const counter = card.querySelector(".count");
    counter.textContent = `\u00d7${numbers.format(count)}`;
    counter.classList.remove("bump");
    void counter.offsetWidth; // restart the animation
    counter.classList.add("bump");
    card.querySelector(".combo-label").textContent = label;
  }

  function giftSent(event) {
    const card = cards.get(event.comboId) || addCard(event);
    // comboCount is the running total of the combo: displayed, never added up.
    showCount(card, event.comboCount, event.comboCount > event.quantity ? "combo" : "");
  }

  function comboEnded(event) {
    const card = cards.get(event.comboId);
    if (!card) return; // already pushed off the screen
    card.classList.add("ended");
    // The total is shown large (×6); the label says how many sends made it up.
    showCount(card, event.totalCount, event.sends > 1 ? `${numbers.format(event.sends)} sends` : "");
    setTimeout(() => removeCard(event.comboId), LINGER_MS);
  }

  function sessionEnded(totals) {
    setState("ended");
    byId("viewers").hidden = true; // nobody is watching a session that has ended
    const summary = totals
      ? ` ${counted(totals.gifts, "gift")}, ${counted(totals.coins, "coin")}.` : "";
    showMessage(`The live session has ended.${summary}`, "notice");
  }

  function handle(event) {
    if (event.cursor) variables.after = event.cursor;
    if (freshStart) {
      freshStart = false;
      setState("live");
      clearNotice();
      loadSession();
    } else {
      eventsArrived = true;
    }
    switch (event.__typename) {
      case "ViewerCountChanged":
        byId("viewer-count").textContent = numbers.format(event.viewers);
        byId("viewers").hidden = false;
        break;
      case "GiftSent":
        giftSent(event);
        break;
      case "ComboEnded":
        comboEnded(event);
        break;
      case "TopGiftersChanged":
        renderTopGifters(event.top);
        break;
      case "GoalProgress":
        showGoal({ id: event.goalId, title: event.title, target: event.target,
                   progress: event.progress, reached: event.progress >= event.target });
        break;
      case "GoalReached":
        showGoal({ id: event.goalId, title: event.title, target: event.target,
                   progress: event.progress, reached: true });
        break;
      case "MatchStarted":
      case "MatchScore":
      case "MatchEnded":
        matchEvent(event);
        break;
      case "SessionEnded":
        sessionEnded(event.totals);
        break;
    }
  }

  function start() {
    setState("connecting");
    if (!token) {
      fail("This overlay needs a token: open it as /overlay/<session id>#token=<token>. " +
           "'livegifts overlay-url <session id>' prints the full URL.");
      return;
    }
    client = graphqlWs.createClient({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
      connectionParams: { Authorization: `Bearer ${token}` },
      // An overlay runs for hours: ride out server restarts and network drops (a failed
      // socket reports a bare Event, which the default would not retry). Refusals still end.
      retryAttempts: Infinity,
      shouldRetry: () => true,
      retryWait: (retries) => new Promise((resolve) =>
        setTimeout(resolve, Math.min(2 ** retries, 30) * 1000)),
      keepAlive: 10000,
      on: {
        connected: () => {
          // Resuming: the events since the last one shown follow, none missed.
          if (variables.after) {
            setState("live");
            clearNotice();
          } else {
            freshStart = true;
          }
        },
        closed: () => {
          if (state !== "live") return; // ended, refused, or never connected
          setState("connecting");
          showMessage("Connection lost: reconnecting\u2026", "notice");
        },
      },
    });
    subscribe();
  }

  function expired(error) {
    return Array.isArray(error) &&
      error.some((e) => e.extensions && e.extensions.code === "CURSOR_EXPIRED");
  }

  function subscribe() {
    client.subscribe({ query: EVENTS, variables }, {
      next: (result) => {
        if (result.errors) fail(`Live events refused: ${describe(result.errors)}`);
        else handle(result.data.liveSessionEvents);
      },
      error: (error) => {
        if (!expired(error)) {
          fail(`Live events refused: ${describe(error)}`);
          return;
        }
        // Offline for longer than the server keeps events: start again from now.
        delete variables.after;
        freshStart = true;
        subscribe();
      },
      complete: () => {
        if (state !== "error" && state !== "ended") sessionEnded(null);
        client.dispose();
      },
    });
  }

  start();
})();
