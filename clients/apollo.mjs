// Apollo Client 4 as a React app would set it up: HttpLink for queries and
// mutations, GraphQLWsLink (graphql-ws) for subscriptions, the token in
// the Authorization header and in connectionParams, relayStylePagination
// for messages. Usage: node apollo.mjs http://127.0.0.1:8080
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { CombinedGraphQLErrors } from '@apollo/client/errors';
import { relayStylePagination } from '@apollo/client/utilities';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { check, done, expect, httpURL, unique, withTimeout, wsURL } from './lib.mjs';

let token = '';
const http = new HttpLink({ uri: httpURL });
const auth = new ApolloLink((op, forward) => {
  op.setContext(({ headers }) => ({ headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) } }));
  return forward(op);
});
const wsClient = createClient({ url: wsURL, webSocketImpl: WebSocket, connectionParams: () => ({ Authorization: `Bearer ${token}` }) });
const link = ApolloLink.split(
  ({ operationType }) => operationType === 'subscription',
  new GraphQLWsLink(wsClient),
  auth.concat(http),
);
const client = new ApolloClient({
  link,
  cache: new InMemoryCache({
    typePolicies: { Conversation: { fields: { messages: relayStylePagination() } } },
  }),
});

const SIGN_UP = gql`mutation SignUp($input: SignUpInput!) { signUp(input: $input) { token user { id displayName } } }`;
const SIGN_IN = gql`mutation SignIn($input: SignInInput!) { signIn(input: $input) { token } }`;
const CREATE = gql`mutation Create($input: CreateConversationInput!) { createConversation(input: $input) { id title } }`;
const SEND = gql`mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id body } }`;
const INBOX = gql`query Inbox { conversations(first: 20) { edges { node {
  id title unreadCount participants { id displayName }
  lastMessage { id body author { id displayName } }
} } } }`;
const MESSAGES = gql`query Messages($id: ID!, $after: String) { conversation(id: $id) { id
  messages(first: 2, after: $after) { edges { cursor node { id body } } pageInfo { hasNextPage endCursor } } } }`;
const ADDED = gql`subscription Added($c: ID!) { messageAdded(conversationId: $c) { id body author { displayName } } }`;

const password = 'correct horse battery';
const bob = await check('sign up (Bob)', async () => {
  const { data } = await client.mutate({ mutation: SIGN_UP, variables: { input: { email: `bob-${unique}@example.com`, password, displayName: 'Bob' } } });
  return data.signUp.user.id;
});
const annEmail = `ann-${unique}@example.com`;
await check('sign up (Ann)', async () => {
  const { data } = await client.mutate({ mutation: SIGN_UP, variables: { input: { email: annEmail, password, displayName: 'Ann' } } });
  token = data.signUp.token;
  expect(token, 'no token');
});
const conv = await check('create a conversation', async () => {
  const { data } = await client.mutate({ mutation: CREATE, variables: { input: { title: 'Apollo', participantIds: [bob] } } });
  return data.createConversation.id;
});
await check('send messages', async () => {
  for (const body of ['one', 'two', 'three', 'four', 'five']) {
    const { data } = await client.mutate({ mutation: SEND, variables: { input: { conversationId: conv, body } } });
    expect(data.sendMessage.body === body, `sent ${body}, got ${data.sendMessage.body}`);
  }
});
await check('the Inbox', async () => {
  const { data } = await client.query({ query: INBOX, fetchPolicy: 'network-only' });
  const node = data.conversations.edges.map((e) => e.node).find((n) => n.id === conv);
  expect(node?.lastMessage?.body === 'five', `inbox: ${JSON.stringify(data).slice(0, 300)}`);
  return { conversations: data.conversations.edges.length };
});
await check('paging with relayStylePagination', async () => {
  const watch = client.watchQuery({ query: MESSAGES, variables: { id: conv } });
  const first = await watch.refetch();
  let info = first.data.conversation.messages.pageInfo;
  for (let i = 0; i < 2 && info.hasNextPage; i++) {
    await watch.fetchMore({ variables: { after: info.endCursor } });
    info = client.readQuery({ query: MESSAGES, variables: { id: conv } }).conversation.messages.pageInfo;
  }
  const merged = client.readQuery({ query: MESSAGES, variables: { id: conv } }).conversation.messages.edges.map((e) => e.node.body);
  expect(merged.length === 5 && new Set(merged).size === 5, `merged pages: ${merged}`);
  return { merged };
});
await check('a subscription (GraphQLWsLink)', async () => {
  const got = new Promise((resolve, reject) => {
    const sub = client.subscribe({ query: ADDED, variables: { c: conv } }).subscribe({
      next: ({ data, error }) => { if (error) reject(error); else if (data) { sub.unsubscribe(); resolve(data.messageAdded.body); } },
      error: reject,
    });
  });
  // The subscription is in place once the server acknowledged the socket
  // and started it; sending until one arrives avoids guessing when.
  let body = '';
  const sender = (async () => {
    for (let i = 0; i < 50 && !body; i++) {
      await client.mutate({ mutation: SEND, variables: { input: { conversationId: conv, body: `live ${i}` } } });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  body = await withTimeout(got, 10000, 'messageAdded');
  await sender;
  expect(body.startsWith('live'), `event ${body}`);
  return { body };
});
await check('a validation error the app can read', async () => {
  try {
    await client.query({ query: gql`query { me { nope } }`, fetchPolicy: 'network-only' });
  } catch (err) {
    expect(CombinedGraphQLErrors.is(err), `not CombinedGraphQLErrors: ${err?.name}: ${err?.message}`);
    const code = err.errors[0]?.extensions?.code;
    expect(code === 'GRAPHQL_VALIDATION_FAILED', `code ${code}`);
    return { code };
  }
  throw new Error('no error');
});
await check('a 429 the app can read (11 wrong passwords)', async () => {
  const saved = token;
  token = '';
  let last;
  for (let i = 0; i < 11; i++) {
    try {
      await client.mutate({ mutation: SIGN_IN, variables: { input: { email: annEmail, password: `wrong ${i}` } } });
    } catch (err) {
      last = err;
    }
  }
  token = saved;
  expect(CombinedGraphQLErrors.is(last), `not CombinedGraphQLErrors: ${last?.name}: ${last?.message}`);
  const code = last.errors[0]?.extensions?.code;
  expect(code === 'RATE_LIMITED', `code ${code}: ${last.message}`);
  return { code, retryAfter: last.errors[0]?.extensions?.retryAfter };
});
await wsClient.dispose();
done();
