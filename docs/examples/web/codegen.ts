// Types for every document in src/, generated from the server's schema (schema.graphql at the
// root of the livegifts checkout; point it at your server's URL instead, e.g.
// "http://127.0.0.1:8000/graphql", when it serves introspection).
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../../schema.graphql",
  documents: ["src/**/*.ts", "!src/gql/**"],
  generates: {
    "src/gql/": {
      preset: "client",
      config: {
        documentMode: "string",
        useTypeImports: true,
        enumsAsTypes: true,
        scalars: { Long: "number", DateTime: "string", Date: "string" },
      },
    },
  },
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: false, // ".js" in the generated imports, as Node's ESM wants
};

export default config;
