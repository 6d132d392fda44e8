// Runs conformance steps through the official turbopuffer TypeScript SDK and prints each result as
// JSON, for tests/sdk/conformance.py to check. Input: a JSON file (argv[2]) with
// {"base_url": ..., "steps": [{"key", "namespace", "method", "params"}]}. Output (stdout): a JSON
// array, one entry per step: {"key", "result"} or {"key", "error": {"status", "body"}}.
// Methods are the Python SDK's snake_case names; each maps to the TypeScript camelCase method of
// the same operation with the same parameter object.
import { readFileSync } from "node:fs";
import Turbopuffer from "@turbopuffer/turbopuffer";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const client = new Turbopuffer({ apiKey: "conformance", baseURL: input.base_url, maxRetries: 0 });

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

async function call(step) {
  if (step.method === "namespaces") {
    const ids = [];
    for await (const summary of client.namespaces(step.params ?? {})) ids.push(summary.id);
    return ids;
  }
  const ns = client.namespace(step.namespace);
  const fn = ns[camel(step.method)];
  if (typeof fn !== "function") throw new Error(`the TypeScript SDK has no method ${camel(step.method)}`);
  if (step.method === "exists") return await ns.exists();
  if (step.method === "poll_copy_from") return await fn.call(ns, step.params.token);
  return await fn.call(ns, step.params ?? {});
}

const out = [];
for (const step of input.steps) {
  try {
    out.push({ key: step.key, result: await call(step) });
  } catch (e) {
    if (e instanceof Turbopuffer.APIError) {
      out.push({ key: step.key, error: { status: e.status ?? null, body: e.error ?? String(e.message) } });
    } else {
      out.push({ key: step.key, error: { status: null, body: String(e && e.message ? e.message : e) } });
    }
  }
}
process.stdout.write(JSON.stringify(out));
