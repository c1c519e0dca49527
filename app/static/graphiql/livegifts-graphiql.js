// GraphiQL as livegifts serves it: opened on the example document, with an Authorization
// placeholder in the Headers tab; queries over HTTP and subscriptions over WebSocket, both to
// this server. Everything it runs is served from /static/graphiql: no CDN.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("livegifts-graphiql-config").textContent);
  const parameters = new URLSearchParams(window.location.search);
  const fetchURL = window.location.href.split("?")[0].split("#")[0];
  const subscriptionUrl = fetchURL.replace(/^http/, "ws");

  function remember(name, value) {
    if (value) parameters.set(name, value); else parameters.delete(name);
    const search = parameters.toString();
    history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
  }

  const fetcher = GraphiQL.createFetcher({ url: fetchURL, subscriptionUrl });
  const explorer = GraphiQLPluginExplorer.explorerPlugin();

  function LivegiftsGraphiQL() {
    const [query, setQuery] = React.useState(parameters.get("q") || config.document);
    const [variables, setVariables] = React.useState(parameters.get("variables") || undefined);
    return React.createElement(GraphiQL, {
      fetcher,
      plugins: [explorer],
      query,
      variables,
      defaultHeaders: config.headers,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      inputValueDeprecation: true,
      onEditQuery: (value) => { setQuery(value); remember("q", value); },
      onEditVariables: (value) => { setVariables(value); remember("variables", value); },
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql"))
    .render(React.createElement(LivegiftsGraphiQL));
})();
