#!/usr/bin/env python3
"""RedactText of a dev server on presidio-research's labelled synth_dataset_v2.json.

The data set (1,500 English texts with labelled PII spans, written by the
presidio-research authors, not by us) is not in this repository: give its
path in TOKENVAULT_SYNTH_DATASET. Without it the script says so and exits 2.

What it does: starts `tokenvault serve --dev` (the binary of --bin, default
$CARGO_TARGET_DIR/release/tokenvault or target/release/tokenvault) on a
free loopback port with a fresh data directory, sends every text through
RedactText over gRPC (one subject per text, every kind), maps the findings
back to the original text's offsets, and prints per labelled entity type:

- spans: labelled spans of that type;
- found: spans the redaction covers, i.e. every letter and digit of the
  span lies inside a changed region (brackets or a `+` left at the edge
  carry no information and do not count against it);
- recall: found / spans;

and, over all changed regions, how many overlap no labelled span at all
(the share of changed regions that cover no labelled entity), per
tokenvault kind.

Needs `pip install grpcio grpcio-tools` (the stubs are compiled from
proto/tokenvault/v1/tokenvault.proto into a temporary directory at start).

Run:
    TOKENVAULT_SYNTH_DATASET=/path/to/synth_dataset_v2.json \
        python3 benches/presidio_synth.py [--bin PATH] [--misses TYPE]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO = os.path.join("tokenvault", "v1", "tokenvault.proto")
EMAIL_TOKEN_SUFFIX = b".invalid"
# The labelled types the issue sets targets for, printed first.
TARGETS = {
    "CREDIT_CARD": 0.98,
    "PHONE_NUMBER": 0.90,
    "EMAIL_ADDRESS": 0.98,
    "IBAN_CODE": 0.98,
    "US_SSN": 0.98,
}


def die(message, code=2):
    print(f"presidio_synth: {message}", file=sys.stderr)
    sys.exit(code)


def load_dataset():
    path = os.environ.get("TOKENVAULT_SYNTH_DATASET")
    if not path:
        die("TOKENVAULT_SYNTH_DATASET is not set: give the path of presidio-research's "
            "data/synth_dataset_v2.json (it is not in this repository)")
    if not os.path.isfile(path):
        die(f"TOKENVAULT_SYNTH_DATASET={path}: no such file")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list) or not data or "full_text" not in data[0]:
        die(f"{path}: not a presidio-research synth dataset (a list of {{full_text, spans}})")
    return data


def compile_stubs(out_dir):
    try:
        from grpc_tools import protoc
    except ImportError:
        die("needs grpcio-tools: pip install grpcio grpcio-tools")
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    # The service's proto imports the HTTP annotations kept beside it.
    annotations = [os.path.join(PROTO_DIR, "google", "api", name)
                   for name in ("annotations.proto", "http.proto")]
    status = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}",
                          f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO,
                          *annotations])
    if status != 0:
        die(f"protoc failed on {PROTO}")
    sys.path.insert(0, out_dir)
    from tokenvault.v1 import tokenvault_pb2, tokenvault_pb2_grpc  # noqa: E402

    return tokenvault_pb2, tokenvault_pb2_grpc


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "tokenvault")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, data_dir):
    if not os.access(binary, os.X_OK):
        die(f"no tokenvault binary at {binary}: build it (cargo build --release) or pass --bin")
    port = free_port()
    log = open(os.path.join(data_dir, "server.log"), "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--dev", "--data-dir", os.path.join(data_dir, "vault"),
         "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    key_file = os.path.join(data_dir, "vault", "dev-admin.key")
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            die(f"the server exited with {proc.returncode}; see {log.name}")
        if os.path.exists(key_file):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    with open(key_file, encoding="utf-8") as f:
                        return proc, port, f.read().strip()
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    die("the server did not start within 60 s")


def original_regions(text_bytes, response):
    """The findings' spans in the original text's byte offsets.

    Outside findings the redacted text is the original byte for byte; a
    token is as long as its value except an email token, which is its value
    plus `.invalid`."""
    regions = []
    growth = 0
    redacted = response.text.encode()
    for f in sorted(response.findings, key=lambda f: f.start):
        token = redacted[f.start:f.end]
        grew = len(EMAIL_TOKEN_SUFFIX) if f.kind == "email" and token.endswith(EMAIL_TOKEN_SUFFIX) else 0
        start = f.start - growth
        end = f.end - growth - grew
        regions.append((start, end, f.kind))
        growth += grew
    if len(redacted) - len(text_bytes) != growth:
        die("a finding's token is not as long as its value: the offset mapping does not hold")
    return regions


def label_bytes(text, span):
    start = len(text[: span["start_position"]].encode())
    end = len(text[: span["end_position"]].encode())
    return start, end


def covered(text_bytes, start, end, regions):
    """Every letter and digit of text_bytes[start:end] lies in a region."""
    value = text_bytes[start:end].decode(errors="replace")
    at = start
    for ch in value:
        size = len(ch.encode())
        if ch.isalnum() and not any(s <= at and at + size <= e for s, e, _ in regions):
            return False
        at += size
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=default_bin(), help="the tokenvault binary to serve with")
    parser.add_argument("--misses", action="append", default=[],
                        help="print the missed spans of this entity type (repeatable)")
    parser.add_argument("--false-positives", action="store_true",
                        help="print changed regions that cover no labelled entity")
    args = parser.parse_args()
    data = load_dataset()

    import grpc

    with tempfile.TemporaryDirectory(prefix="tv-synth-") as tmp:
        pb2, pb2_grpc = compile_stubs(os.path.join(tmp, "stubs"))
        proc, port, key = start_server(args.bin, tmp)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = pb2_grpc.TokenVaultStub(channel)
            metadata = (("authorization", f"Bearer {key}"),)
            responses = []
            began = time.perf_counter()
            for i, item in enumerate(data):
                request = pb2.RedactTextRequest(subject_id=f"synth-{i}", text=item["full_text"])
                responses.append(stub.RedactText(request, metadata=metadata))
            elapsed = time.perf_counter() - began
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    spans = Counter()
    found = Counter()
    misses = defaultdict(list)
    regions_by_kind = Counter()
    stray_by_kind = Counter()
    strays = []
    for item, response in zip(data, responses):
        text = item["full_text"]
        text_bytes = text.encode()
        regions = original_regions(text_bytes, response)
        labels = [(label_bytes(text, s), s["entity_type"]) for s in item["spans"]]
        for (start, end), kind in labels:
            spans[kind] += 1
            if covered(text_bytes, start, end, regions):
                found[kind] += 1
            else:
                misses[kind].append(text_bytes[max(0, start - 40):end + 10].decode(errors="replace"))
        for start, end, kind in regions:
            regions_by_kind[kind] += 1
            if not any(s < end and start < e for (s, e), _ in labels):
                stray_by_kind[kind] += 1
                strays.append((kind, text_bytes[max(0, start - 40):end + 10].decode(errors="replace")))

    print(f"tokenvault RedactText ({os.path.basename(args.bin)} serve --dev) on {len(data)} texts "
          f"of {os.path.basename(os.environ['TOKENVAULT_SYNTH_DATASET'])}, "
          f"{len(data) / elapsed:.0f} texts/s over gRPC, one client")
    print()
    print("| entity type | spans | found | recall | target |")
    print("|---|---:|---:|---:|---:|")
    ordered = list(TARGETS) + sorted(set(spans) - set(TARGETS), key=lambda k: -spans[k])
    for kind in ordered:
        target = f"{TARGETS[kind]:.2f}" if kind in TARGETS else ""
        recall = found[kind] / spans[kind] if spans[kind] else float("nan")
        print(f"| {kind} | {spans[kind]} | {found[kind]} | {recall:.3f} | {target} |")
    total = sum(regions_by_kind.values())
    stray = sum(stray_by_kind.values())
    print()
    print("| tokenvault kind | changed regions | covering no labelled entity |")
    print("|---|---:|---:|")
    for kind in sorted(regions_by_kind):
        print(f"| {kind} | {regions_by_kind[kind]} | {stray_by_kind[kind]} |")
    share = stray / total if total else 0.0
    print(f"| all | {total} | {stray} ({share:.3f}) |")
    for kind in args.misses:
        print(f"\nmissed {kind}:")
        for context in misses[kind]:
            print(f"  {context!r}")
    if args.false_positives:
        print("\nchanged regions covering no labelled entity:")
        for kind, context in strays:
            print(f"  {kind}: {context!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
