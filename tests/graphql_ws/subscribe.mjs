// Subscribes with the graphql-ws client and prints what the subscription gave, as JSON:
// {"next": [results...], "error": <what the iterator threw, or null>, "complete": bool}.
// Usage: node subscribe.mjs <ws url> <document> [<token>]; stops after the first result.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, query, token] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  retryAttempts: 0,
  connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
});
const outcome = { next: [], error: null, complete: false };
try {
  for await (const result of client.iterate({ query })) {
    outcome.next.push(result);
    break;
  }
  outcome.complete = outcome.next.length === 0;
} catch (error) {
  outcome.error = Array.isArray(error) ? error : String(error?.reason ?? error?.message ?? error);
}
await client.dispose();
console.log(JSON.stringify(outcome));
