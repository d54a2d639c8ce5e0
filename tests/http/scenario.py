#!/usr/bin/env python3
"""The HTTP/JSON API driven by a client that is not ours (Python requests).

    scenario.py BASE_URL ADMIN_KEY CHAT_KEY AUDIT_FILE

tokenize -> detokenize -> redact -> restore -> export -> forget against a
running server, checking status codes, bodies (proto3 canonical JSON:
camelCase, enums by name, 64-bit integers as strings) and the audit
records; then the bad inputs (each a 400 naming the problem, nothing
stored), a denied call (403, google.rpc.Status) and an unauthenticated
one (401). Exits non-zero with the failed check on stderr.
"""

import json
import sys

import requests

BASE, ADMIN_KEY, CHAT_KEY, AUDIT_FILE = sys.argv[1:5]
SUBJECT = "cust-http-7f3a"
BAD_SUBJECT = "cust-http-bad-19c2"
CARD = "4111 1111 1111 1111"
EMAIL = "alice.smith@example.com"
TIMEOUT = 30


def headers(key):
    return {"authorization": f"Bearer {key}"}


def call(method, path, key=ADMIN_KEY, **kwargs):
    return requests.request(method, BASE + path, headers=headers(key), timeout=TIMEOUT, **kwargs)


def expect(response, status):
    assert response.status_code == status, (
        f"{response.request.method} {response.request.path_url}: "
        f"HTTP {response.status_code}, expected {status}: {response.text[:300]}"
    )
    return response


def rpc_status(response, http, code):
    """A refusal: its HTTP status and a google.rpc.Status body."""
    expect(response, http)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code and body["details"] == [], body
    assert isinstance(body["message"], str) and body["message"], body
    return body["message"]


def export_lines(subject, key=ADMIN_KEY):
    response = expect(call("GET", f"/v1/subjects/{subject}/export", key, params={"purpose": "art. 15"}), 200)
    assert response.headers["content-type"] == "application/x-ndjson", response.headers
    return [json.loads(line) for line in response.text.splitlines() if line]


def audit_records():
    with open(AUDIT_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def round_trip():
    items = [{"value": CARD, "format": "card"}, {"value": EMAIL, "format": "email"}]
    body = {"subjectId": SUBJECT, "items": items}
    tokens = expect(call("POST", "/v1/tokenize", json=body), 200).json()["tokens"]
    assert len(tokens) == 2, tokens
    card_token, email_token = tokens
    assert card_token != CARD and len(card_token) == len(CARD), card_token
    assert card_token[:7] == CARD[:7] and card_token[-4:] == CARD[-4:], card_token
    assert "@" in email_token and email_token != EMAIL, email_token
    again = expect(call("POST", "/v1/tokenize", json=body), 200).json()["tokens"]
    assert again == tokens, "deterministic mode gives the same tokens"

    unknown = "tok_unknownaaaaaaaaaaaaaaaaaa"
    body = {"tokens": [card_token, email_token, unknown], "purpose": "http test"}
    results = expect(call("POST", "/v1/detokenize", json=body), 200).json()["results"]
    assert results[0] == {
        "token": card_token,
        "status": "TOKEN_STATUS_FOUND",
        "value": CARD,
        "reveal": "REVEAL_FULL",
        "format": "card",
    }, results[0]
    assert results[1]["value"] == EMAIL and results[1]["format"] == "email", results[1]
    # Canonical JSON leaves default values out: no value, no reveal.
    assert results[2] == {"token": unknown, "status": "TOKEN_STATUS_NOT_FOUND"}, results[2]

    text = f"Hi, my card is {CARD}, write to {EMAIL} please"
    redacted = expect(call("POST", "/v1/redact", json={"subjectId": SUBJECT, "text": text}), 200).json()
    assert CARD not in redacted["text"] and EMAIL not in redacted["text"], redacted
    kinds = sorted(f["kind"] for f in redacted["findings"])
    assert kinds == ["card", "email"], redacted["findings"]
    encoded = redacted["text"].encode("utf-8")
    for finding in redacted["findings"]:
        # UTF-8 byte offsets of the token in the returned text; 32-bit
        # integers are JSON numbers.
        assert isinstance(finding["start"], int) and isinstance(finding["end"], int), finding
        assert encoded[finding["start"]:finding["end"]].decode("utf-8") == finding["token"], finding
    assert card_token in redacted["text"], "the same subject's token for the same card"

    restored = expect(call("POST", "/v1/restore", json={"text": redacted["text"], "purpose": "http test"}), 200).json()
    assert restored == {"text": text, "restored": 2}, restored

    lines = export_lines(SUBJECT)
    exported = {line["result"]["value"]: line["result"] for line in lines}
    assert set(exported) == {CARD, EMAIL}, lines
    created = exported[CARD]["createdAtUnix"]
    assert isinstance(created, str) and int(created) > 1_700_000_000, exported[CARD]
    assert exported[CARD]["token"] == card_token and exported[CARD]["format"] == "card"

    forgotten = expect(call("POST", f"/v1/subjects/{SUBJECT}:forget", json={"reason": "ticket 42"}), 200).json()
    assert forgotten["tokensErased"] == "2", forgotten
    receipt = forgotten["receipt"]
    assert len(receipt["subjectHash"]) == 64 and len(receipt["mac"]) == 64, receipt
    assert isinstance(receipt["auditSequence"], str) and int(receipt["auditSequence"]) > 0, receipt
    assert receipt["tokensErased"] == "2", receipt

    body = {"tokens": [card_token], "purpose": "http test"}
    results = expect(call("POST", "/v1/detokenize", json=body), 200).json()["results"]
    assert results[0]["status"] == "TOKEN_STATUS_ERASED", results
    assert not [line for line in export_lines(SUBJECT) if "result" in line], "nothing left to export"

    records = audit_records()
    done = [(r["principal"], r["rpc"]) for r in records if r["outcome"] == {"result": "ok"}]
    for rpc in ["detokenize", "restore_text", "export_subject", "forget_subject"]:
        assert ("admin", rpc) in done, f"no audit record of {rpc}: {done}"
    forget = [r for r in records if r["rpc"] == "forget_subject"]
    assert forget and forget[-1]["seq"] == int(receipt["auditSequence"]), forget
    assert forget[-1]["purpose"] == "ticket 42" and forget[-1]["count"] == 2, forget[-1]
    assert all(CARD not in json.dumps(r) and EMAIL not in json.dumps(r) for r in records)


def bad_input():
    url = "/v1/tokenize"
    good_item = {"value": CARD, "format": "card"}

    def refused(**kwargs):
        return rpc_status(call("POST", url, **kwargs), 400, 3)

    message = refused(data=b'{"subjectId": "' + BAD_SUBJECT.encode() + b'", "items": [')
    assert "not valid JSON" in message, message

    huge = {"subjectId": BAD_SUBJECT, "items": [good_item, {"value": "x" * 70_000, "format": "text"}]}
    message = refused(json=huge)
    assert "limits.max_message_bytes" in message, message

    message = refused(json={"subjectId": BAD_SUBJECT, "items": [good_item], "colour": "red"})
    assert "unknown field `colour`" in message, message

    message = refused(json={"subjectId": BAD_SUBJECT, "items": [good_item, {"value": 4111111111111111, "format": "card"}]})
    assert message.startswith("items[1].value: invalid type: integer"), message
    assert "4111111111111111" not in message, "a value is never echoed"

    message = refused(json={"items": [good_item]})
    assert message.startswith("subject_id:"), message

    message = refused(data=b'{"subjectId": "\xff\xfe", "items": []}')
    assert "not UTF-8" in message, message

    message = refused(json={"subjectId": BAD_SUBJECT, "items": [good_item, {"value": CARD[:-1] + "2", "format": "card"}]})
    assert message.startswith("items[1]:"), message

    assert export_lines(BAD_SUBJECT) == [], "a refused call stores nothing"


def refusals():
    body = {"tokens": ["tok_unknownaaaaaaaaaaaaaaaaaa"], "purpose": "http test"}
    message = rpc_status(call("POST", "/v1/detokenize", CHAT_KEY, json=body), 403, 7)
    assert "detokenize" in message, message
    denied = [r for r in audit_records() if r["principal"] == "chat" and r["rpc"] == "detokenize"]
    assert denied and denied[-1]["outcome"]["result"] == "denied", denied
    assert denied[-1]["outcome"]["code"] == "permission_denied", denied[-1]

    response = requests.post(BASE + "/v1/tokenize", json={"subjectId": "s", "items": []}, timeout=TIMEOUT)
    rpc_status(response, 401, 16)
    rpc_status(call("POST", "/v1/tokenize", "tvk_not_a_key", json={}), 401, 16)
    rpc_status(call("GET", "/v1/nothing-here"), 404, 5)
    rpc_status(call("GET", "/v1/tokenize"), 405, 12)

    assert requests.get(BASE + "/healthz", timeout=TIMEOUT).text == "ok\n"
    ready = requests.get(BASE + "/readyz", timeout=TIMEOUT)
    assert (ready.status_code, ready.text) == (200, "ok\n"), ready.text


def main():
    for step in [round_trip, bad_input, refusals]:
        step()
        print(f"ok {step.__name__}")


if __name__ == "__main__":
    main()
