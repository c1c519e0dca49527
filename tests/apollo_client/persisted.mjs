// Apollo Client (its persisted-queries link, GET for hashed queries) against a livegifts
// server: node persisted.mjs <graphql url>. Prints one JSON line: every HTTP request the
// client made and the data it got back.
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { createHash } from "node:crypto";

const url = process.argv[2];
const requests = [];
async function recordingFetch(input, init = {}) {
  const target = new URL(typeof input === "string" ? input : input.url);
  const body = init.body ? JSON.parse(init.body) : null;
  const extensions = target.searchParams.get("extensions") ?? body?.extensions;
  requests.push({
    method: init.method ?? "GET",
    sentDocument: Boolean(target.searchParams.get("query") || body?.query),
    sentHash: JSON.stringify(extensions ?? "").includes("sha256Hash"),
  });
  const response = await fetch(input, init);
  requests.at(-1).status = response.status;
  return response;
}

const persisted = new PersistedQueryLink({
  sha256: (document) => createHash("sha256").update(document).digest("hex"),
  useGETForHashedQueries: true,
});
const client = new ApolloClient({
  link: persisted.concat(new HttpLink({ uri: url, fetch: recordingFetch })),
  cache: new InMemoryCache(),
});
const catalogue = gql`query Catalogue { gifts(first: 3) { edges { node { id name coinPrice } } } }`;
const first = await client.query({ query: catalogue, fetchPolicy: "no-cache" });
const second = await client.query({ query: catalogue, fetchPolicy: "no-cache" });
console.log(JSON.stringify({ requests, first: first.data, second: second.data }));
