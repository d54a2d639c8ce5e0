#!/usr/bin/env python3
"""A client generated from docs/openapi.json by a generator that is not
ours (openapi-python-client, from PyPI), calling the real server.

    generated_client.py OPENAPI_JSON WORK_DIR BASE_URL API_KEY

Generates the client into WORK_DIR, imports it, tokenizes a card and a
phone, detokenizes them back, and checks that a refused call comes back as
the document's Status. Exits non-zero with the failed check on stderr.
"""

import importlib
import subprocess
import sys
from pathlib import Path

OPENAPI, WORK, BASE, KEY = sys.argv[1:5]
CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"

out = Path(WORK) / "client"
subprocess.run(
    ["openapi-python-client", "generate", "--path", OPENAPI, "--output-path", str(out), "--overwrite"],
    check=True,
    capture_output=True,
)
packages = [p for p in out.iterdir() if (p / "client.py").exists()]
assert len(packages) == 1, f"one generated package, got {packages}"
sys.path.insert(0, str(out))
name = packages[0].name
client_module = importlib.import_module(f"{name}.client")
models = importlib.import_module(f"{name}.models")
tokenize = importlib.import_module(f"{name}.api.token_vault.tokenize")
detokenize = importlib.import_module(f"{name}.api.token_vault.detokenize")

client = client_module.AuthenticatedClient(base_url=BASE, token=KEY)
body = models.TokenizeRequest(
    subject_id="cust-generated-31",
    items=[
        models.TokenizeItem(value=CARD, format_="card"),
        models.TokenizeItem(value=PHONE, format_="phone"),
    ],
)
answer = tokenize.sync_detailed(client=client, body=body)
assert answer.status_code == 200, (answer.status_code, answer.content)
tokens = answer.parsed.tokens
assert len(tokens) == 2 and tokens[0] != CARD and tokens[0][-4:] == CARD[-4:], tokens

answer = detokenize.sync_detailed(
    client=client, body=models.DetokenizeRequest(tokens=tokens, purpose="generated client")
)
assert answer.status_code == 200, (answer.status_code, answer.content)
results = answer.parsed.results
assert [r.value for r in results] == [CARD, PHONE], results
assert results[0].status == models.DetokenizeResultStatus.TOKEN_STATUS_FOUND, results[0]

bad = models.TokenizeRequest(subject_id="", items=[models.TokenizeItem(value=CARD, format_="card")])
answer = tokenize.sync_detailed(client=client, body=bad)
assert answer.status_code == 400, (answer.status_code, answer.content)
assert isinstance(answer.parsed, models.Status) and answer.parsed.code == 3, answer.parsed
print("ok generated client")
