// urql (@urql/core 6) with its default options (fetchExchange, urql's own
// Accept header) for queries and mutations, and subscriptionExchange over
// graphql-ws for subscriptions. Usage: node urql.mjs http://127.0.0.1:8080
import { Client, cacheExchange, fetchExchange, gql, subscriptionExchange } from '@urql/core';
import { createClient as createWSClient } from 'graphql-ws';
import { pipe, subscribe } from 'wonka';
import WebSocket from 'ws';
import { check, done, expect, httpURL, unique, withTimeout, wsURL } from './lib.mjs';

let token = '';
// The response types urql got: fetch is wrapped only to record them (the
// request, urql's default Accept included, is left as urql makes it).
const types = [];
const recordingFetch = async (url, init) => {
  const res = await fetch(url, init);
  types.push(res.headers.get('content-type'));
  return res;
};
const wsClient = createWSClient({ url: wsURL, webSocketImpl: WebSocket, connectionParams: () => ({ Authorization: `Bearer ${token}` }) });
const client = new Client({
  url: httpURL,
  exchanges: [
    cacheExchange,
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: wsClient.subscribe({ ...request, query: request.query ?? '' }, sink) }),
      }),
    }),
  ],
  fetch: recordingFetch,
  fetchOptions: () => (token ? { headers: { authorization: `Bearer ${token}` } } : {}),
});

const ok = (result, what) => {
  expect(!result.error, `${what}: ${result.error?.message} ${JSON.stringify(result.error?.graphQLErrors?.map((e) => e.extensions))}`);
  return result.data;
};

const password = 'correct horse battery';
const bob = await check('sign up (Bob)', async () => {
  const r = await client.mutation(gql`mutation($input: SignUpInput!) { signUp(input: $input) { user { id } } }`,
    { input: { email: `bob-${unique}@example.com`, password, displayName: 'Bob' } }).toPromise();
  return ok(r, 'signUp').signUp.user.id;
});
await check('sign up (Ann)', async () => {
  const r = await client.mutation(gql`mutation($input: SignUpInput!) { signUp(input: $input) { token } }`,
    { input: { email: `ann-${unique}@example.com`, password, displayName: 'Ann' } }).toPromise();
  token = ok(r, 'signUp').signUp.token;
});
const conv = await check('create a conversation', async () => {
  const r = await client.mutation(gql`mutation($input: CreateConversationInput!) { createConversation(input: $input) { id } }`,
    { input: { title: 'urql', participantIds: [bob] } }).toPromise();
  return ok(r, 'createConversation').createConversation.id;
});
const SEND = gql`mutation($input: SendMessageInput!) { sendMessage(input: $input) { id body } }`;
await check('five queries and mutations in a row, as JSON', async () => {
  for (let i = 0; i < 5; i++) {
    ok(await client.mutation(SEND, { input: { conversationId: conv, body: `m${i}` } }).toPromise(), 'sendMessage');
    const data = ok(await client.query(gql`query { conversations(first: 5) { nodes { id lastMessage { body } } } }`, {},
      { requestPolicy: 'network-only' }).toPromise(), 'conversations');
    expect(data.conversations.nodes[0].lastMessage.body === `m${i}`, `inbox after m${i}: ${JSON.stringify(data)}`);
  }
  const streamed = types.filter((t) => !t?.startsWith('application/graphql-response+json'));
  expect(streamed.length === 0, `responses not application/graphql-response+json: ${streamed}`);
  return { responses: types.length };
});
await check('a validation error the app can read', async () => {
  const r = await client.query(gql`query { me { nope } }`, {}, { requestPolicy: 'network-only' }).toPromise();
  const code = r.error?.graphQLErrors?.[0]?.extensions?.code;
  expect(code === 'GRAPHQL_VALIDATION_FAILED', `code ${code}: ${r.error?.message}`);
  return { code };
});
await check('a subscription (subscriptionExchange, graphql-ws)', async () => {
  let body = '';
  const got = new Promise((resolve, reject) => {
    const { unsubscribe } = pipe(
      client.subscription(gql`subscription($c: ID!) { messageAdded(conversationId: $c) { id body } }`, { c: conv }),
      subscribe((r) => {
        if (r.error) reject(r.error);
        else if (r.data) { unsubscribe(); resolve(r.data.messageAdded.body); }
      }),
    );
  });
  const sender = (async () => {
    for (let i = 0; i < 50 && !body; i++) {
      ok(await client.mutation(SEND, { input: { conversationId: conv, body: `live ${i}` } }).toPromise(), 'sendMessage');
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  body = await withTimeout(got, 10000, 'messageAdded');
  await sender;
  return { body };
});
await wsClient.dispose();
done();
