// The HTTP/JSON API driven by a client that is not ours: Node.js and its
// built-in fetch, as a chat platform's webhook handler or bot would call it.
//
//     node scenario.mjs BASE_URL ADMIN_KEY CHAT_KEY
//
// tokenize -> detokenize -> redact -> restore -> export -> forget, checking
// status codes and proto3 canonical JSON bodies (camelCase, enums by name,
// 64-bit integers as strings, UTF-8 byte offsets); then bad input (400,
// google.rpc.Status naming the problem, nothing stored), a denied call (403)
// and a missing key (401). Exits non-zero with the failed check on stderr.

import assert from "node:assert/strict";

const [BASE, ADMIN_KEY, CHAT_KEY] = process.argv.slice(2);
const SUBJECT = "cust-node-5be1";
const BAD_SUBJECT = "cust-node-bad-77d0";
const CARD = "5500 0000 0000 0004";
const PHONE = "+7 916 123-45-67";

async function call(method, path, { key = ADMIN_KEY, json, body } = {}) {
  const headers = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(BASE + path, { method, headers, body });
  return { status: response.status, type: response.headers.get("content-type"), text: await response.text() };
}

function expectJson(response, status, what) {
  assert.equal(response.status, status, `${what}: HTTP ${response.status}: ${response.text.slice(0, 300)}`);
  return JSON.parse(response.text);
}

/** A refusal: its HTTP status and a google.rpc.Status body; the message. */
function rpcStatus(response, http, code, what) {
  const body = expectJson(response, http, what);
  assert.equal(response.type, "application/json", what);
  assert.deepEqual(Object.keys(body).sort(), ["code", "details", "message"], what);
  assert.equal(body.code, code, `${what}: ${response.text}`);
  assert.ok(typeof body.message === "string" && body.message.length > 0, what);
  return body.message;
}

async function exportLines(subject) {
  const response = await call("GET", `/v1/subjects/${subject}/export?purpose=art.%2015`);
  assert.equal(response.status, 200, response.text);
  assert.equal(response.type, "application/x-ndjson");
  return response.text.split("\n").filter((line) => line).map((line) => JSON.parse(line));
}

async function roundTrip() {
  const items = [{ value: CARD, format: "card" }, { value: PHONE, format: "phone" }];
  const { tokens } = expectJson(await call("POST", "/v1/tokenize", { json: { subjectId: SUBJECT, items } }), 200, "tokenize");
  assert.equal(tokens.length, 2);
  const [cardToken, phoneToken] = tokens;
  assert.notEqual(cardToken, CARD);
  assert.equal(cardToken.length, CARD.length, cardToken);
  assert.equal(cardToken.slice(-4), CARD.slice(-4), cardToken);
  assert.ok(phoneToken.startsWith("+7 ") && phoneToken !== PHONE, phoneToken);

  const { results } = expectJson(
    await call("POST", "/v1/detokenize", { json: { tokens, purpose: "node test" } }),
    200,
    "detokenize",
  );
  assert.deepEqual(results[0], { token: cardToken, status: "TOKEN_STATUS_FOUND", value: CARD, reveal: "REVEAL_FULL", format: "card" });
  assert.equal(results[1].value, PHONE);

  // Cyrillic before the values: the offsets are UTF-8 bytes, not UTF-16
  // code units as JavaScript strings count them.
  const text = `Здравствуйте, карта ${CARD}, телефон ${PHONE}`;
  const redacted = expectJson(await call("POST", "/v1/redact", { json: { subjectId: SUBJECT, text } }), 200, "redact");
  assert.ok(!redacted.text.includes(CARD) && !redacted.text.includes(PHONE), redacted.text);
  assert.deepEqual(redacted.findings.map((f) => f.kind).sort(), ["card", "phone"]);
  const bytes = Buffer.from(redacted.text, "utf8");
  for (const finding of redacted.findings) {
    assert.equal(bytes.subarray(finding.start, finding.end).toString("utf8"), finding.token, JSON.stringify(finding));
  }

  const restored = expectJson(
    await call("POST", "/v1/restore", { json: { text: redacted.text, purpose: "node test" } }),
    200,
    "restore",
  );
  assert.deepEqual(restored, { text, restored: 2 });

  const exported = (await exportLines(SUBJECT)).map((line) => line.result);
  assert.deepEqual(exported.map((r) => r.value).sort(), [PHONE, CARD].sort());
  assert.equal(typeof exported[0].createdAtUnix, "string", "64-bit integers are strings");

  const forgotten = expectJson(
    await call("POST", `/v1/subjects/${SUBJECT}:forget`, { json: { reason: "ticket 77" } }),
    200,
    "forget",
  );
  assert.equal(forgotten.tokensErased, "2");
  assert.equal(forgotten.receipt.mac.length, 64);
  const after = expectJson(
    await call("POST", "/v1/detokenize", { json: { tokens: [cardToken], purpose: "node test" } }),
    200,
    "detokenize after forget",
  );
  assert.equal(after.results[0].status, "TOKEN_STATUS_ERASED");
}

async function badInput() {
  const good = { value: CARD, format: "card" };
  const refused = async (options, what) => rpcStatus(await call("POST", "/v1/tokenize", options), 400, 3, what);

  let message = await refused({ body: `{"subjectId": "${BAD_SUBJECT}", "items": [` }, "cut JSON");
  assert.match(message, /not valid JSON/);
  message = await refused({ json: { subjectId: BAD_SUBJECT, items: [good], colour: "red" } }, "unknown field");
  assert.match(message, /unknown field `colour`/);
  message = await refused({ json: { subjectId: BAD_SUBJECT, items: [good, { value: 5500000000000004, format: "card" }] } }, "a number");
  assert.match(message, /^items\[1\]\.value: invalid type: integer/);
  assert.ok(!message.includes("5500000000000004"), "a value is never echoed");
  message = await refused({ json: { subjectId: BAD_SUBJECT, items: [good, { value: "5500 0000 0000 0005", format: "card" }] } }, "Luhn");
  assert.match(message, /^items\[1\]:/);
  assert.deepEqual(await exportLines(BAD_SUBJECT), [], "a refused call stores nothing");
}

async function refusals() {
  const body = { tokens: ["tok_unknownaaaaaaaaaaaaaaaaaa"], purpose: "node test" };
  const message = rpcStatus(await call("POST", "/v1/detokenize", { key: CHAT_KEY, json: body }), 403, 7, "denied");
  assert.match(message, /detokenize/);
  rpcStatus(await call("POST", "/v1/tokenize", { key: null, json: { subjectId: "s", items: [] } }), 401, 16, "no key");
}

for (const step of [roundTrip, badInput, refusals]) {
  await step();
  console.log(`ok ${step.name}`);
}
