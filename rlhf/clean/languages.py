"""Language filter for `rlhf clean`: an offline detector whose models ship inside its package
(`lingua-language-detector`), loaded only when `quality.languages` is set (loading takes a few seconds)."""

from __future__ import annotations

from lingua import Language, LanguageDetectorBuilder

from rlhf.errors import ConfigError


def check_languages(allowed: list[str]) -> list[Language]:
    names = {lang.name.lower(): lang for lang in Language.all()}
    unknown = [a for a in allowed if a.lower() not in names]
    if unknown:
        raise ConfigError(
            f"'quality.languages': unknown language {unknown[0]!r}; use English names such as english, german, "
            "french, spanish, chinese."
        )
    return [names[a.lower()] for a in allowed]


class LanguageFilter:
    def __init__(self, allowed: list[str]):
        self.allowed = set(check_languages(allowed))
        self.detector = LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()

    def reason(self, text: str) -> str | None:
        """None when the text is in an allowed language (or too short to tell), else "language: ..."."""
        if len(text.split()) < 3:
            return None
        found = self.detector.detect_language_of(text)
        if found is None or found in self.allowed:
            return None
        return f"language: detected {found.name.lower()}, not one of quality.languages"
