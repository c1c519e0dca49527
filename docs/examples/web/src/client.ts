// A typed GraphQL request over HTTP: the documents' types come from the schema (codegen), and
// every failure, of any route, is read the same way: {"errors": [{"message", "extensions"}]}.
import type { TypedDocumentString } from "./gql/graphql.js";

export interface ApiError {
  message: string;
  extensions?: { code?: string; retryAfterSeconds?: number };
}

export class ApiFailure extends Error {
  constructor(readonly status: number, readonly errors: ApiError[]) {
    super(errors.map((error) => error.message).join("; "));
  }
}

export async function request<Result, Variables>(
  url: string,
  document: TypedDocumentString<Result, Variables>,
  variables: Variables,
  token?: string,
): Promise<Result> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query: document.toString(), variables }),
  });
  const body = (await response.json()) as { data?: Result | null; errors?: ApiError[] };
  if (body.errors?.length) throw new ApiFailure(response.status, body.errors);
  return body.data as Result;
}
