// Makes the calls of one scenario with the official Fish Audio TypeScript SDK
// (npm fish-audio, pinned in package.json / package-lock.json) against a
// local server, for spec/sdk_parity_spec.lua, which compares what the server
// received from it with what it received from fish.
//
//   node send.mjs <base_url> <api_key> <scenario> [<params as JSON>]
//
// The spec installs the SDK with `npm ci` into build/ts_sdk/ and runs a copy
// of this script from there, so that `import "fish-audio"` finds it. The
// params carry the values (headers, query, keys, ...), so that the spec
// holds each expected value in one place. Scenarios:
//
//   headers     client-wide headers (params.client_headers); then one
//               textToSpeech.convert per entry of params.calls, each with
//               that call's headers (requestOptions.headers)
//   query       textToSpeech.convert, then voices.search(params.search),
//               both with requestOptions.queryParams = params.query
//   api_key     a client made with params.client_key; convert with
//               requestOptions.apiKey = <api_key>, then convert without it
//   rate_limit  voices.search({}), then convert with
//               requestOptions.maxRetries = params.max_retries; with
//               params.hold, prints READY between the two and waits for
//               its stdin to close
//
// Every convert sends params.request ({ text, format }) with the SDK's
// default backend. Prints one JSON line:
//   { "scenario": ..., "results": [ { "call", "ok", "bytes" | "items",
//     "status", "error", "ms" }, ... ] }
// where status/error describe a failed call (the SDK's FishAudioError) and
// ms is how long the call took. Exit status 0 once the line is printed,
// whatever the calls returned; 2 for bad arguments.
import { FishAudioClient } from "fish-audio";

const [baseUrl, apiKey, scenario, paramsJson] = process.argv.slice(2);
if (!baseUrl || !apiKey || !scenario) {
  process.stderr.write("usage: node send.mjs <base_url> <api_key> <scenario> [<params JSON>]\n");
  process.exit(2);
}
const params = paramsJson ? JSON.parse(paramsJson) : {};
const request = params.request ?? { text: "Hello from the TypeScript SDK.", format: "pcm" };

// One call's outcome. The audio stream is read to its end, so the server
// has served the whole request before the script exits.
async function outcome(call, fn) {
  const started = Date.now();
  try {
    const data = await fn();
    const result = { call, ok: true };
    if (data && typeof data[Symbol.asyncIterator] === "function") {
      let bytes = 0;
      for await (const chunk of data) bytes += chunk.length;
      result.bytes = bytes;
    } else if (data && Array.isArray(data.items)) {
      result.items = data.items.length;
    }
    result.ms = Date.now() - started;
    return result;
  } catch (e) {
    return {
      call,
      ok: false,
      status: e?.statusCode ?? null,
      error: String(e?.message ?? e).split("\n")[0],
      ms: Date.now() - started,
    };
  }
}

function client(options = {}) {
  return new FishAudioClient({ apiKey, baseUrl, ...options });
}

const scenarios = {
  async headers() {
    const c = client({ headers: params.client_headers ?? {} });
    const results = [];
    for (const [i, call] of (params.calls ?? [{}]).entries()) {
      results.push(await outcome(`convert ${i + 1}`, () =>
        c.textToSpeech.convert(request, undefined, { headers: call.headers })));
    }
    return results;
  },
  async query() {
    const c = client();
    // The SDK sends queryParams in the object's key order; fish sorts its
    // keys. Sorted here too, so the spec can compare whole sequences.
    const queryParams = Object.fromEntries(
      Object.entries(params.query ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    return [
      await outcome("convert", () => c.textToSpeech.convert(request, undefined, { queryParams })),
      await outcome("voices.search", () => c.voices.search(params.search ?? {}, { queryParams })),
    ];
  },
  async api_key() {
    const c = client({ apiKey: params.client_key });
    return [
      await outcome("convert with apiKey", () => c.textToSpeech.convert(request, undefined, { apiKey })),
      await outcome("convert without", () => c.textToSpeech.convert(request)),
    ];
  },
  async rate_limit() {
    const c = client();
    // A first call loads the SDK's fetch and opens its connection; then,
    // with params.hold, "READY" and a wait until stdin closes, so the spec
    // can queue its 429 just before the convert, however long node took
    // to start.
    const warm = await outcome("voices.search", () => c.voices.search({}));
    if (params.hold) {
      process.stdout.write("READY\n");
      await new Promise((resolve) => {
        process.stdin.on("end", resolve);
        process.stdin.resume();
      });
    }
    return [
      warm,
      await outcome("convert", () =>
        c.textToSpeech.convert(request, undefined, { maxRetries: params.max_retries ?? 1 })),
    ];
  },
};

if (!Object.hasOwn(scenarios, scenario)) {
  process.stderr.write(`send.mjs: unknown scenario '${scenario}' (${Object.keys(scenarios).join(", ")})\n`);
  process.exit(2);
}
const results = await scenarios[scenario]();
// Exit once the line is out: the SDK's idle keep-alive connection would
// otherwise hold the process open for a few seconds.
process.stdout.write(JSON.stringify({ scenario, results }) + "\n", () => process.exit(0));
