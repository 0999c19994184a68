// Shared by the client scripts: the server's URLs from the command line,
// the checks a script makes, and its one-line JSON report.
export const base = process.argv[2] ?? 'http://127.0.0.1:8080';
export const httpURL = `${base}/query`;
export const wsURL = httpURL.replace(/^http/, 'ws');

const checks = [];

// check runs one named step; a step that throws is recorded as failed and
// ends the script (later steps depend on earlier ones).
export async function check(name, fn) {
  try {
    const detail = await fn();
    checks.push({ name, ok: true, ...(detail === undefined ? {} : { detail }) });
    return detail;
  } catch (err) {
    checks.push({ name, ok: false, error: String(err?.stack ?? err).slice(0, 600) });
    done();
  }
}

// expect throws when cond is false.
export function expect(cond, message) {
  if (!cond) throw new Error(message);
}

// done prints {"client", "ok", "checks"} and exits 0 only if every check
// passed.
export function done() {
  const ok = checks.length > 0 && checks.every((c) => c.ok);
  console.log(JSON.stringify({ client: process.argv[1].split('/').pop(), ok, checks }));
  process.exit(ok ? 0 : 1);
}

// withTimeout rejects when p does not settle within ms.
export function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

// unique makes emails that do not collide between runs on one database.
export const unique = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

// A failure the scripts did not catch is still one JSON line.
process.on('unhandledRejection', (err) => {
  checks.push({ name: 'unhandled rejection', ok: false, error: String(err?.stack ?? err).slice(0, 600) });
  done();
});

// signUpPair signs up two users with plain fetch and returns Ann's token
// and a conversation between them with a first message.
export async function signUpPair() {
  const post = async (query, variables, token) => {
    const res = await fetch(httpURL, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = await res.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };
  const signUp = `mutation($input: SignUpInput!) { signUp(input: $input) { token user { id } } }`;
  const password = 'correct horse battery';
  const bob = await post(signUp, { input: { email: `bob-${unique}@example.com`, password, displayName: 'Bob' } });
  const ann = await post(signUp, { input: { email: `ann-${unique}@example.com`, password, displayName: 'Ann' } });
  const token = ann.signUp.token;
  const conv = (await post(`mutation($input: CreateConversationInput!) { createConversation(input: $input) { id } }`,
    { input: { participantIds: [bob.signUp.user.id] } }, token)).createConversation.id;
  const send = (body) => post(`mutation($input: SendMessageInput!) { sendMessage(input: $input) { id } }`,
    { input: { conversationId: conv, body } }, token);
  return { token, conv, send };
}

// firstEvent subscribes with subscribe(sink) => dispose, sends messages
// with send until the first event arrives (the subscription is in place
// only some time after it is asked for), and returns that event's data.
export async function firstEvent(subscribe, send, ms = 10000) {
  let dispose;
  let settled = false;
  const got = new Promise((resolve, reject) => {
    dispose = subscribe({
      next: (r) => (r.errors ? reject(new Error(JSON.stringify(r.errors))) : resolve(r.data)),
      error: (e) => reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
      complete: () => reject(new Error('completed without an event')),
    });
  });
  const sender = send && (async () => {
    for (let i = 0; i < 50 && !settled; i++) {
      await send(`live ${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    return await withTimeout(got, ms, 'the first event');
  } finally {
    settled = true;
    dispose();
    await sender;
  }
}
