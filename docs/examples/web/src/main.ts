// A viewer's visit to a live session, fully typed: follow the session's live events over
// graphql-ws, buy coins with a store receipt, send a gift, and see it arrive as an event.
//
//   LIVEGIFTS_API=http://127.0.0.1:8000/graphql LIVEGIFTS_TOKEN=<viewer token> \
//   LIVEGIFTS_SESSION=<live session id> LIVEGIFTS_RECEIPT=<sandbox receipt> npm start
//
// It prints one line of JSON with what happened, and exits non-zero on any failure.
import { randomUUID } from "node:crypto";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { request } from "./client.js";
import { graphql } from "./gql/index.js";

const Catalogue = graphql(`
  query Catalogue {
    gifts(first: 20) { edges { node { id sku name coinPrice imageUrl } } }
    coinPackages { id sku coins }
  }
`);

const PurchaseCoins = graphql(`
  mutation PurchaseCoins($input: PurchaseCoinsInput!) {
    purchaseCoins(input: $input) {
      wallet { coins }
      replayed
      userErrors { code field message }
    }
  }
`);

const SendGift = graphql(`
  mutation SendGift($input: SendGiftInput!) {
    sendGift(input: $input) {
      receipt { id coinsPaid comboCount }
      walletCoins
      userErrors { code field message }
    }
  }
`);

const LiveSessionEvents = graphql(`
  subscription LiveSessionEvents($sessionId: ID!) {
    liveSessionEvents(sessionId: $sessionId) {
      __typename
      ... on LiveEvent { cursor }
      ... on GiftSent { sender { name } gift { name } quantity comboCount }
      ... on ViewerCountChanged { viewers }
    }
  }
`);

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

const api = process.env.LIVEGIFTS_API ?? "http://127.0.0.1:8000/graphql";
const token = required("LIVEGIFTS_TOKEN");
const sessionId = required("LIVEGIFTS_SESSION");
const receipt = required("LIVEGIFTS_RECEIPT");
const packageSku = process.env.LIVEGIFTS_PACKAGE ?? "coins-70";
const giftSku = process.env.LIVEGIFTS_GIFT ?? "rose";

const live = createClient({
  url: api.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
});

// Follow the session first, so that the gift below arrives as an event.
const events = live.iterate({ query: LiveSessionEvents.toString(), variables: { sessionId } });
const first = await events.next(); // the subscription is running once its first event is in

const { gifts, coinPackages } = await request(api, Catalogue, {});
const coinPackage = coinPackages.find((candidate) => candidate.sku === packageSku);
const gift = gifts.edges.map((edge) => edge.node).find((node) => node.sku === giftSku);
if (!coinPackage || !gift) throw new Error(`no package ${packageSku} or gift ${giftSku}`);

const { purchaseCoins } = await request(api, PurchaseCoins, {
  input: { packageId: coinPackage.id, provider: "sandbox", receipt, idempotencyKey: randomUUID() },
}, token);
if (purchaseCoins.userErrors.length) throw new Error(purchaseCoins.userErrors[0].message);

const { sendGift } = await request(api, SendGift, {
  input: { sessionId, giftId: gift.id, quantity: 1, idempotencyKey: randomUUID() },
}, token);
if (!sendGift.receipt) throw new Error(sendGift.userErrors[0]?.message ?? "not sent");

let arrived: { sender: string; gift: string; quantity: number } | undefined;
for await (const result of { [Symbol.asyncIterator]: () => events }) {
  const event = result.data?.liveSessionEvents as
    | { __typename: string; sender?: { name: string }; gift?: { name: string }; quantity?: number }
    | undefined;
  if (event?.__typename === "GiftSent") {
    arrived = { sender: event.sender!.name, gift: event.gift!.name, quantity: event.quantity! };
    break;
  }
}
await live.dispose();

console.log(JSON.stringify({
  firstEvent: (first.value as { data?: { liveSessionEvents?: { __typename: string } } })
    ?.data?.liveSessionEvents?.__typename,
  coinsAfterPurchase: purchaseCoins.wallet?.coins,
  coinsPaid: sendGift.receipt.coinsPaid,
  walletCoins: sendGift.walletCoins,
  giftImage: gift.imageUrl,
  arrived,
}));
