// The GraphQL-over-HTTP spec's server audit (graphql-http's auditServer)
// against a running chatql: prints {"client", "ok", "counts": {ok, notice,
// warn, error}, "problems"} as one JSON line; ok (and exit 0) only with no
// warn and no error. Usage: node audit.mjs http://127.0.0.1:8080
import { auditServer } from 'graphql-http';
import { httpURL } from './lib.mjs';

const results = await auditServer({ url: httpURL });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
const problems = [];
for (const r of results) {
  counts[r.status]++;
  if (r.status !== 'ok') {
    let detail = r.reason;
    if (r.response) {
      try {
        detail += ` (HTTP ${r.response.status}, ${r.response.headers.get('content-type')}: ${(await r.response.text()).slice(0, 200)})`;
      } catch { /* body already read */ }
    }
    problems.push({ status: r.status, id: r.id, name: r.name, reason: detail });
  }
}
const ok = counts.warn + counts.error === 0;
console.log(JSON.stringify({ client: 'audit.mjs', ok, counts, problems }));
process.exit(ok ? 0 : 1);
