// The graphql-ws client (graphql-transport-ws) on its own: messageAdded
// with the token in connectionParams, and poolStatus without one.
// Usage: node graphql-ws.mjs http://127.0.0.1:8080
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { check, done, expect, firstEvent, signUpPair, wsURL } from './lib.mjs';

let pair;
await check('sign up and create a conversation', async () => { pair = await signUpPair(); });
const { token, conv, send } = pair;
const signedIn = createClient({ url: wsURL, webSocketImpl: WebSocket, connectionParams: { Authorization: `Bearer ${token}` } });
await check('messageAdded', async () => {
  const data = await firstEvent((sink) => signedIn.subscribe({
    query: 'subscription($c: ID!) { messageAdded(conversationId: $c) { id body } }', variables: { c: conv },
  }, sink), send);
  expect(data.messageAdded.body.startsWith('live'), JSON.stringify(data));
  return { body: data.messageAdded.body };
});
const anonymous = createClient({ url: wsURL, webSocketImpl: WebSocket });
await check('poolStatus (no sign-in)', async () => {
  const data = await firstEvent((sink) => anonymous.subscribe({ query: 'subscription { poolStatus(intervalMs: 100) { status total } }' }, sink));
  expect(typeof data.poolStatus.status === 'string', JSON.stringify(data));
  return data.poolStatus;
});
await signedIn.dispose();
await anonymous.dispose();
done();
