"""Presidio's analyzer as `rlhf.clean.pii` configures it (imported on first use: Presidio takes ~6 s to
import, and most commands that load `rlhf.clean` never scan text for personal data)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import phonenumbers
import tldextract
from phonenumbers import Leniency
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, LocalRecognizer, RecognizerRegistry
from presidio_analyzer import RecognizerResult as Result
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU")
NANP_LAYOUT = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[-.])?\d{3}[-.]\d{4}")
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLD(pattern_text.rpartition("@")[2]).suffix != ""


class GlobalIpRecognizer(IpRecognizer):
    def invalidate_result(self, pattern_text: str) -> bool:
        if super().invalidate_result(pattern_text):
            return True
        return not ipaddress.ip_interface(pattern_text).ip.is_global


class NanpLayoutRecognizer(LocalRecognizer):
    """Numbers in a North-American layout that libphonenumber finds *possible* (not necessarily valid)."""

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[Result]:
        out = []
        for m in phonenumbers.PhoneNumberMatcher(text, "US", leniency=Leniency.POSSIBLE):
            if NANP_LAYOUT.fullmatch(m.raw_string):
                out.append(Result("PHONE_NUMBER", m.start, m.end, 0.4))
        return EntityRecognizer.remove_duplicates(out)


@lru_cache(maxsize=1)
def analyzer() -> AnalyzerEngine:
    registry = RecognizerRegistry(supported_languages=["en"])
    for rec in (
        OfflineEmailRecognizer(),
        PhoneRecognizer(supported_regions=REGIONS, leniency=Leniency.VALID),
        NanpLayoutRecognizer(supported_entities=["PHONE_NUMBER"], name="NanpLayoutRecognizer"),
        GlobalIpRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
    ):
        registry.add_recognizer(rec)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
