// The graphql-sse client (distinct connections mode: one POST with
// Accept: text/event-stream per subscription): messageAdded with the
// token in a header, and poolStatus without one.
// Usage: node graphql-sse.mjs http://127.0.0.1:8080
import { createClient } from 'graphql-sse';
import { check, done, expect, firstEvent, httpURL, signUpPair } from './lib.mjs';

let pair;
await check('sign up and create a conversation', async () => { pair = await signUpPair(); });
const { token, conv, send } = pair;
const signedIn = createClient({ url: httpURL, headers: { Authorization: `Bearer ${token}` }, retryAttempts: 0 });
await check('messageAdded', async () => {
  const data = await firstEvent((sink) => signedIn.subscribe({
    query: 'subscription($c: ID!) { messageAdded(conversationId: $c) { id body } }', variables: { c: conv },
  }, sink), send);
  expect(data.messageAdded.body.startsWith('live'), JSON.stringify(data));
  return { body: data.messageAdded.body };
});
const anonymous = createClient({ url: httpURL, retryAttempts: 0 });
await check('poolStatus (no sign-in)', async () => {
  const data = await firstEvent((sink) => anonymous.subscribe({ query: 'subscription { poolStatus(intervalMs: 100) { status total } }' }, sink));
  expect(typeof data.poolStatus.status === 'string', JSON.stringify(data));
  return data.poolStatus;
});
signedIn.dispose();
anonymous.dispose();
done();
