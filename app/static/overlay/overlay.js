// The livegifts live overlay: the gifts, combos, viewers and top gifters of one live session.
//
// The session id is the last path segment (/overlay/<session id>); the token comes from the URL
// fragment (#token=...), which browsers never send to the server. Events arrive over
// graphql-transport-ws (the vendored graphql-ws client); the top gifters are loaded once per
// connection over HTTP and then replaced by each TopGiftersChanged event the server sends.
// <body data-state> is "connecting", "live", "ended" or "error", for scripts that drive the page.
"use strict";

(() => {
  const FEED_SIZE = 5; // gift cards on screen at once; the oldest leaves first
  const LINGER_MS = 12000; // how long a finished combo stays on screen
  const TOP_GIFTERS = 3; // TopGiftersChanged carries the top three

  const EVENTS = `subscription($sessionId: ID!) { liveSessionEvents(sessionId: $sessionId) {
    __typename
    ... on GiftSent { sender { name } gift { name imageUrl } quantity comboId comboCount }
    ... on ComboEnded { comboId totalCount sends }
    ... on ViewerCountChanged { viewers }
    ... on TopGiftersChanged { top { rank user { name } coins } }
    ... on SessionEnded { totals { gifts coins } } } }`;
  const TOP_GIFTERS_QUERY = `query($id: ID!) { liveSession(id: $id) {
    topGifters(first: ${TOP_GIFTERS}) { edges { node { rank user { name } coins } } } } }`;

  const byId = (id) => document.getElementById(id);
  const segments = location.pathname.split("/").filter(Boolean);
  const sessionId = decodeURIComponent(segments[segments.length - 1] || "");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const numbers = new Intl.NumberFormat("en");
  const cards = new Map(); // comboId -> the gift card showing that combo

  let state = "connecting";
  let client = null;
  let freshConnection = false; // reload the top gifters after each (re)connection
  let topFromEvents = false; // a TopGiftersChanged arrived while the query was in flight

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

  async function loadTopGifters() {
    topFromEvents = false;
    let body;
    try {
      const response = await fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: TOP_GIFTERS_QUERY, variables: { id: sessionId } }),
      });
      body = await response.json();
    } catch (error) {
      return; // the next TopGiftersChanged fills the list in
    }
    if (body.errors) {
      fail(`Top gifters refused: ${describe(body.errors)}`);
    } else if (!topFromEvents && body.data.liveSession) {
      renderTopGifters(body.data.liveSession.topGifters.edges.map((edge) => edge.node));
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
    showCount(card, event.totalCount, event.sends > 1 ? `combo of ${event.sends}` : "");
    setTimeout(() => removeCard(event.comboId), LINGER_MS);
  }

  function sessionEnded(totals) {
    setState("ended");
    const summary = totals
      ? ` ${counted(totals.gifts, "gift")}, ${counted(totals.coins, "coin")}.` : "";
    showMessage(`The live session has ended.${summary}`, "notice");
  }

  function handle(event) {
    if (freshConnection) {
      freshConnection = false;
      setState("live");
      clearNotice();
      loadTopGifters();
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
        topFromEvents = true;
        renderTopGifters(event.top);
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
        connected: () => { freshConnection = true; },
        closed: () => {
          if (state !== "live") return; // ended, refused, or never connected
          setState("connecting");
          showMessage("Connection lost: reconnecting\u2026", "notice");
        },
      },
    });
    client.subscribe({ query: EVENTS, variables: { sessionId } }, {
      next: (result) => {
        if (result.errors) fail(`Live events refused: ${describe(result.errors)}`);
        else handle(result.data.liveSessionEvents);
      },
      error: (error) => fail(`Live events refused: ${describe(error)}`),
      complete: () => {
        if (state !== "error" && state !== "ended") sessionEnded(null);
        client.dispose();
      },
    });
  }

  start();
})();
