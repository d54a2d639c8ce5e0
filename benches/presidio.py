#!/usr/bin/env python3
"""Microsoft Presidio's analyzer on tokenvault's chat corpus, for comparison.

Runs presidio-analyzer (`pip install presidio-analyzer`) with its predefined
*pattern* recognizers only, no NER model, over tests/data/chat_corpus.jsonl,
and prints precision and recall per kind (same table as
tests/scan_corpus.rs) and messages/s of `AnalyzerEngine.analyze`.

No spaCy model: AnalyzerEngine always runs an NlpEngine before its
recognizers, and the default one loads a spaCy model (`en_core_web_lg`),
which cannot be downloaded here and would add NER we do not want to
measure. `NoNlpEngine` below implements Presidio's NlpEngine interface and
returns empty NlpArtifacts (no entities, tokens or lemmas), so only the
regex/checksum recognizers run. What that costs Presidio: the
SpacyRecognizer (NER: PERSON, LOCATION...) is absent, which we do not
compare anyway, and the lemma-based context enhancer has no tokens, so
context words cannot raise a score; the recognizers' own validation
(Luhn, mod-97, SSN rules, phonenumbers) is untouched.

Recognizers: CreditCardRecognizer (CREDIT_CARD -> card), EmailRecognizer
(EMAIL_ADDRESS -> email), PhoneRecognizer (PHONE_NUMBER -> phone; regions
US, UK, DE, FR, RU, UA, BY, KZ, UZ so the Russian-speaking numbers in the
corpus are in scope), IbanRecognizer (IBAN_CODE -> iban), UsSsnRecognizer
(US_SSN -> us_ssn); each registered for "en" and "ru", and each message is
analyzed in its own language. Only these five run, which if anything
flatters Presidio's speed. Presidio has no recognizer for the Russian
kinds (passport, SNILS, INN, OGRN, bank account). The score threshold is
Presidio's default (0: every result counts).

A finding is a true positive when the kind matches and the span equals the
label's span exactly (offsets converted from Python str indices to UTF-8
bytes, as labelled).

Run: python3 benches/presidio.py [--limit N]
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict

import tldextract
import tldextract.tldextract

# EmailRecognizer checks TLDs with tldextract, whose default extractor
# fetches the public suffix list over the network first; this machine has
# none, so use the snapshot bundled with tldextract (what it falls back to
# anyway, minus a failed fetch and its traceback).
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: E402
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import (  # noqa: E402
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "chat_corpus.jsonl")
KINDS = {
    "CREDIT_CARD": "card",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "IBAN_CODE": "iban",
    "US_SSN": "us_ssn",
}
LANGUAGES = ["en", "ru"]
PHONE_REGIONS = ("US", "UK", "DE", "FR", "RU", "UA", "BY", "KZ", "UZ")


class NoNlpEngine(NlpEngine):
    """An NlpEngine that loads no model and finds nothing."""

    def load(self):
        pass

    def is_loaded(self):
        return True

    def process_text(self, text, language):
        return NlpArtifacts(entities=[], tokens=[], tokens_indices=[], lemmas=[], nlp_engine=self, language=language)

    def process_batch(self, texts, language, batch_size=1, n_process=1, **kwargs):
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word, language):
        return False

    def is_punct(self, word, language):
        return False

    def get_supported_entities(self):
        return []

    def get_supported_languages(self):
        return LANGUAGES


def build_engine():
    registry = RecognizerRegistry(supported_languages=LANGUAGES)
    for lang in LANGUAGES:
        registry.add_recognizer(CreditCardRecognizer(supported_language=lang))
        registry.add_recognizer(EmailRecognizer(supported_language=lang))
        registry.add_recognizer(PhoneRecognizer(supported_language=lang, supported_regions=PHONE_REGIONS))
        registry.add_recognizer(IbanRecognizer(supported_language=lang))
        registry.add_recognizer(UsSsnRecognizer(supported_language=lang))
    return AnalyzerEngine(registry=registry, nlp_engine=NoNlpEngine(), supported_languages=LANGUAGES)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="only the first N messages")
    args = parser.parse_args()
    with open(CORPUS, encoding="utf-8") as f:
        messages = [json.loads(line) for line in f]
    if args.limit:
        messages = messages[: args.limit]
    engine = build_engine()
    entities = list(KINDS)
    engine.analyze(text="warm up 4111 1111 1111 1111", language="en", entities=entities)

    results = []
    began = time.perf_counter()
    for m in messages:
        results.append(engine.analyze(text=m["text"], language=m["lang"], entities=entities))
    elapsed = time.perf_counter() - began

    counts = defaultdict(lambda: [0, 0, 0])  # labels, found, true positives
    for kind in KINDS.values():
        counts[kind]
    for m, found in zip(messages, results):
        text = m["text"]
        labels = {(p["kind"], p["start"], p["end"]) for p in m["pii"] if p["kind"] in KINDS.values()}
        for kind, _, _ in labels:
            counts[kind][0] += 1
        for r in found:
            kind = KINDS.get(r.entity_type)
            if kind is None:
                continue
            start = len(text[: r.start].encode())
            end = len(text[: r.end].encode())
            counts[kind][1] += 1
            if (kind, start, end) in labels:
                counts[kind][2] += 1

    n_bytes = sum(len(m["text"].encode()) for m in messages)
    print(f"presidio on {len(messages)} messages")
    print(f"{'kind':<16} {'labels':>7} {'found':>7} {'tp':>7} {'precision':>9} {'recall':>7}")
    for kind in sorted(counts):
        labels, found, tp = counts[kind]
        precision = tp / found if found else 1.0
        recall = tp / labels if labels else 1.0
        print(f"{kind:<16} {labels:>7} {found:>7} {tp:>7} {precision:>9.3f} {recall:>7.3f}")
    print(f"{len(messages) / elapsed:.0f} messages/s, {n_bytes / elapsed / 1e6:.3f} MB/s "
          f"({elapsed:.2f} s for {len(messages)} messages, one thread)")


if __name__ == "__main__":
    sys.exit(main())
