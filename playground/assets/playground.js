// chatql's playground: GraphiQL on this server's /query, configured by the
// JSON in #playground-config (a script that is not run, so that the page's
// Content-Security-Policy needs no inline scripts). Queries and mutations
// go over HTTP, subscriptions over a websocket (graphql-transport-ws) to
// the same path; the header editor's headers go with both, as the
// websocket's connectionParams for the latter, which is where chatql reads
// Authorization from.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("playground-config").textContent);
  var url = location.protocol + "//" + location.host + config.endpoint;
  var subscriptionUrl = (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + config.endpoint;

  // The editors' contents live in the URL, so that a link shares them.
  var parameters = Object.fromEntries(new URLSearchParams(location.search));
  function update(key) {
    return function (value) {
      parameters[key] = value;
      var search = new URLSearchParams();
      Object.keys(parameters).forEach(function (k) {
        if (parameters[k]) {
          search.set(k, parameters[k]);
        }
      });
      history.replaceState(null, "", "?" + search.toString());
    };
  }

  var fetcher = GraphiQL.createFetcher({ url: url, subscriptionUrl: subscriptionUrl });
  var headers = parameters.headers;
  if (headers === undefined && config.headers) {
    headers = JSON.stringify(config.headers, null, 2);
  }
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      query: parameters.query,
      variables: parameters.variables,
      operationName: parameters.operationName,
      headers: headers,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      inputValueDeprecation: true,
      onEditQuery: update("query"),
      onEditVariables: update("variables"),
      onEditHeaders: update("headers"),
      onEditOperationName: update("operationName"),
    })
  );
})();
